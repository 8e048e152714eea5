package reporter

import (
	"testing"
)

// TestConfiguredResourceAttributes: the configured attributes reach every resource,
// in key order after the reporter's own but for the process ID, which
// comes last, and lose to the ones the reporter sets itself.
func TestConfiguredResourceAttributes(t *testing.T) {
	r := &Reporter{cfg: Config{
		HostName:    "host-a",
		ServiceName: "svc",
		ResourceAttributes: map[string]string{
			"host.name":                   "from-env",
			"process.pid":                 "1",
			"service.name":                "from-env",
			"deployment.environment.name": "prod",
			"cloud.region":                "eu-west-1",
		},
	}}
	res := r.resource(42, &processInfo{executablePath: "/usr/bin/app", name: "app"})
	got := map[string]string{}
	var keys []string
	for _, kv := range res.Attributes {
		if _, dup := got[kv.Key]; dup {
			t.Errorf("attribute %s twice", kv.Key)
		}
		keys = append(keys, kv.Key)
		got[kv.Key] = kv.Value.GetStringValue()
		if kv.Key == "process.pid" && kv.Value.GetIntValue() != 42 {
			t.Errorf("process.pid %v", kv.Value)
		}
	}
	for k, want := range map[string]string{
		"host.name":                   "host-a",
		"service.name":                "svc",
		"deployment.environment.name": "prod",
		"cloud.region":                "eu-west-1",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	n := len(keys)
	if n < 3 || keys[n-3] != "cloud.region" || keys[n-2] != "deployment.environment.name" || keys[n-1] != "process.pid" {
		t.Errorf("attributes %q: want the configured ones in key order, then process.pid", keys)
	}
}

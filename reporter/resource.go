package reporter

import (
	"maps"
	"slices"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
)

// appendConfigured appends the configured resource attributes extra to
// attrs, in key order, skipping keys attrs already has: the attributes the
// reporter sets itself win.
func appendConfigured(attrs []*commonpb.KeyValue, extra map[string]string) []*commonpb.KeyValue {
	if len(extra) == 0 {
		return attrs
	}
	have := len(attrs)
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		if slices.ContainsFunc(attrs[:have], func(kv *commonpb.KeyValue) bool { return kv.Key == k }) {
			continue
		}
		attrs = append(attrs, strKV(k, extra[k]))
	}
	return attrs
}

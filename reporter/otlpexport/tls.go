package otlpexport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of a TLS client configuration. Empty fields
// are not used.
type TLSFiles struct {
	// CA holds the certificates that verify the backend's certificate,
	// instead of the system's roots.
	CA string
	// Cert and Key are the client's certificate chain and private key,
	// for mutual TLS. Both or neither must be set.
	Cert, Key string
}

// LoadTLS returns a client TLS configuration with the files f names: the
// system's roots when f.CA is empty, a client certificate when f.Cert and
// f.Key are set. Errors name the file at fault.
func LoadTLS(f TLSFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", f.CA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.Cert != "" && f.Key != "":
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s and key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case f.Cert != "":
		return nil, errors.New("client certificate set without its key")
	case f.Key != "":
		return nil, errors.New("client key set without its certificate")
	}
	return cfg, nil
}

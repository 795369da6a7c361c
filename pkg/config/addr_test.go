package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAddrAndBaseURL(t *testing.T) {
	tests := []struct {
		name, addr, url string
		wantErr         []string
	}{
		{"unset", "", "", nil},
		{"good", "127.0.0.1:9090", "https://audit.example.com/", nil},
		{"port only", ":0", "http://localhost:8080", nil},
		{"no port", "localhost", "", []string{"LOGBOOK_ADMIN_ADDR=\"localhost\""}},
		{"bad port", ":99999", "", []string{"LOGBOOK_ADMIN_ADDR"}},
		{"relative url", "", "/portal", []string{"LOGBOOK_PUBLIC_URL=\"/portal\""}},
		{"ftp url", "", "ftp://x", []string{"LOGBOOK_PUBLIC_URL"}},
		{"both bad", "x", "y", []string{"LOGBOOK_ADMIN_ADDR", "LOGBOOK_PUBLIC_URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := FromMap(map[string]string{"LOGBOOK_ADMIN_ADDR": tt.addr, "LOGBOOK_PUBLIC_URL": tt.url})
			addr := env.Addr("LOGBOOK_ADMIN_ADDR", ":9090")
			u := env.BaseURL("LOGBOOK_PUBLIC_URL", "")
			err := env.Err()
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				if tt.addr != "" {
					assert.Equal(t, tt.addr, addr)
				} else {
					assert.Equal(t, ":9090", addr)
				}
				if tt.url == "https://audit.example.com/" {
					assert.Equal(t, "https://audit.example.com", u)
				}
				return
			}
			require.Error(t, err)
			for _, w := range tt.wantErr {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

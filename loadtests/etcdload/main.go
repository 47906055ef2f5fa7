// etcdload: concurrent puts to one etcd member over TLS with a client certificate, for the
// bench's raw-etcd baseline (wrk cannot present one, and etcd's JSON gateway ignores
// certificate users). Prints one JSON line: rps, p50_ms, p99_ms, errors.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	endpoint := flag.String("endpoint", "", "HOST:2379")
	caFile := flag.String("cacert", "", "CA certificate (PEM)")
	certFile := flag.String("cert", "", "client certificate (PEM)")
	keyFile := flag.String("key", "", "client key (PEM)")
	clients := flag.Int("clients", 64, "concurrent requests")
	seconds := flag.Float64("seconds", 8, "how long")
	flag.Parse()

	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	check(err)
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(*caFile)
	check(err)
	pool.AppendCertsFromPEM(ca)
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://" + *endpoint},
		DialTimeout: 5 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12},
	})
	check(err)
	defer client.Close()

	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	var mu sync.Mutex
	var latencies []float64
	errors := 0
	var wg sync.WaitGroup
	started := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var mine []float64
			bad := 0
			for i := 0; time.Now().Before(deadline); i++ {
				t := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := client.Put(ctx, fmt.Sprintf("/bench/raw-%d-%d", c, i%1000), "value-raw")
				cancel()
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, float64(time.Since(t).Microseconds())/1000)
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errors += bad
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	sort.Float64s(latencies)
	out := map[string]float64{"rps": float64(len(latencies)) / elapsed, "errors": float64(errors)}
	out["p50_ms"], out["p99_ms"] = pct(latencies, 0.50), pct(latencies, 0.99)
	check(json.NewEncoder(os.Stdout).Encode(out))
}

func pct(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))]
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdload:", err)
		os.Exit(1)
	}
}

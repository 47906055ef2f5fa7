// grpcload: concurrent unary calls of modematrix.v1.Kv (Put or Get) over TLS, for the
// bench's gRPC rows; wrk speaks no gRPC. The two request messages are encoded here by hand
// (protobuf wire format: field 1 key, field 2 value), so no generated Go code is needed.
// Prints one JSON line: rps, p50_ms, p99_ms, errors.
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// raw passes already-encoded protobuf messages through gRPC untouched.
type raw struct{}

func (raw) Marshal(v any) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = append([]byte(nil), data...); return nil }
func (raw) Name() string                       { return "proto" }

func field(number int, data []byte) []byte {
	out := []byte{byte(number<<3 | 2)}
	n := len(data)
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	return append(append(out, byte(n)), data...)
}

func main() {
	target := flag.String("target", "", "HOST:PORT of the gRPC front door")
	caFile := flag.String("cacert", "", "cluster CA (PEM)")
	token := flag.String("token", "", "bearer token")
	method := flag.String("method", "put", "put or get")
	key := flag.String("key", "bench", "key (get), or key prefix (put: prefix-N, N < keys)")
	keys := flag.Int("keys", 1000, "distinct keys for put")
	connections := flag.Int("connections", 4, "HTTP/2 connections")
	clients := flag.Int("clients", 64, "concurrent calls")
	seconds := flag.Float64("seconds", 8, "how long")
	flag.Parse()

	pool := x509.NewCertPool()
	ca, err := os.ReadFile(*caFile)
	check(err)
	pool.AppendCertsFromPEM(ca)
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		conns[i], err = grpc.Dial(*target, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{})))
		check(err)
		defer conns[i].Close()
	}
	path := "/modematrix.v1.Kv/Put"
	if *method == "get" {
		path = "/modematrix.v1.Kv/Get"
	} else if *method != "put" {
		check(fmt.Errorf("-method: expected put or get, got %q", *method))
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+*token)

	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	var mu sync.Mutex
	var latencies []float64
	errors := 0
	var firstError error
	var wg sync.WaitGroup
	started := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			conn := conns[c%len(conns)]
			var mine []float64
			bad := 0
			var seen error
			for i := 0; time.Now().Before(deadline); i++ {
				request := field(1, []byte(*key))
				if *method == "put" {
					request = append(field(1, []byte(fmt.Sprintf("%s-%d", *key, (c*7919+i)%*keys))), field(2, []byte(fmt.Sprintf("value-%d", i)))...)
				}
				var reply []byte
				t := time.Now()
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := conn.Invoke(callCtx, path, &request, &reply)
				cancel()
				if err != nil {
					bad++
					if seen == nil {
						seen = err
					}
					continue
				}
				mine = append(mine, float64(time.Since(t).Microseconds())/1000)
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errors += bad
			if firstError == nil {
				firstError = seen
			}
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	sort.Float64s(latencies)
	out := map[string]any{"rps": float64(len(latencies)) / elapsed, "errors": errors}
	out["p50_ms"], out["p99_ms"] = pct(latencies, 0.50), pct(latencies, 0.99)
	if firstError != nil {
		out["first_error"] = firstError.Error()
	}
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
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(1)
	}
}

package main

// The DATAGRAM data plane over the ICE pair, byte for byte the aioice agent's
// (lab/agents/ice_agent.py DataPlane): a 3-byte prefix says what a datagram is.
//   ping: "NLP" + 4-byte big-endian sequence number, zero padding to 64 bytes
//   pong: "NLR" + the ping's bytes after its prefix
//   bulk: "NLT" + 4-byte big-endian sequence number, zero padding to 1000 bytes

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
)

const (
	planeDatagram = "datagram" // contract.DataPlane.DATAGRAM
	pingSize      = 64
	datagramSize  = 1000
	readBuffer    = 64 * 1024
)

var (
	prefixPing = []byte("NLP")
	prefixPong = []byte("NLR")
	prefixBulk = []byte("NLT")
)

// dataPlanes are what this agent speaks, preferred first (descriptions' "data").
var dataPlanes = []string{planeDatagram}

// commonPlane is the first of the offerer's planes the answerer also has, or "".
func commonPlane(offerer, answerer []string) string {
	for _, p := range offerer {
		for _, q := range answerer {
			if p == q {
				return p
			}
		}
	}
	return ""
}

type dataPlane struct {
	conn *ice.Conn

	mu      sync.Mutex
	pending map[uint32]chan time.Time

	bulkBytes, bulkPackets int64
	lastBulk               int64 // unix nanoseconds
	lost                   int32
}

func startDataPlane(conn *ice.Conn) *dataPlane {
	d := &dataPlane{conn: conn, pending: map[uint32]chan time.Time{}}
	go d.receive()
	return d
}

// receive echoes pings, matches pongs and counts bulk datagrams until the connection closes.
func (d *dataPlane) receive() {
	buf := make([]byte, readBuffer)
	for {
		n, err := d.conn.Read(buf)
		if err != nil {
			atomic.StoreInt32(&d.lost, 1)
			return
		}
		data := buf[:n]
		if n < 3 {
			continue
		}
		switch {
		case bytes.Equal(data[:3], prefixPing):
			pong := append(append([]byte(nil), prefixPong...), data[3:]...)
			if _, err := d.conn.Write(pong); err != nil {
				logf("WARN", "pong: %v", err)
			}
		case bytes.Equal(data[:3], prefixPong) && n >= 7:
			seq := binary.BigEndian.Uint32(data[3:7])
			d.mu.Lock()
			waiter := d.pending[seq]
			delete(d.pending, seq)
			d.mu.Unlock()
			if waiter != nil {
				waiter <- time.Now()
			}
		case bytes.Equal(data[:3], prefixBulk):
			atomic.AddInt64(&d.bulkBytes, int64(n))
			atomic.AddInt64(&d.bulkPackets, 1)
			atomic.StoreInt64(&d.lastBulk, time.Now().UnixNano())
		}
	}
}

// ping is one round trip, or false when no answer comes within timeout.
func (d *dataPlane) ping(seq uint32, timeout time.Duration) (time.Duration, bool) {
	waiter := make(chan time.Time, 1)
	d.mu.Lock()
	d.pending[seq] = waiter
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.pending, seq)
		d.mu.Unlock()
	}()
	payload := make([]byte, pingSize)
	copy(payload, prefixPing)
	binary.BigEndian.PutUint32(payload[3:7], seq)
	sentAt := time.Now()
	if _, err := d.conn.Write(payload); err != nil {
		return 0, false
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case at := <-waiter:
		return at.Sub(sentAt), true
	case <-timer.C:
		return 0, false
	}
}

// blast sends bulk datagrams at mbps for seconds (at most a second longer), paced every
// millisecond as the aioice agent does; it returns what it sent and for how long.
func (d *dataPlane) blast(mbps, seconds float64, stop <-chan struct{}) (int, time.Duration, error) {
	perSecond := mbps * 1e6 / 8 / datagramSize
	total := int(perSecond * seconds)
	if total < 1 {
		total = 1
	}
	packet := make([]byte, datagramSize)
	copy(packet, prefixBulk)
	started := time.Now()
	stopAt := started.Add(time.Duration((seconds + 1.0) * float64(time.Second)))
	sent := 0
	for sent < total && time.Now().Before(stopAt) {
		due := int(time.Since(started).Seconds()*perSecond) + 1
		if due > total {
			due = total
		}
		for ; sent < due; sent++ {
			binary.BigEndian.PutUint32(packet[3:7], uint32(sent))
			if _, err := d.conn.Write(packet); err != nil {
				return sent, time.Since(started), err
			}
		}
		select {
		case <-stop:
			return sent, time.Since(started), errAborted
		case <-time.After(time.Millisecond):
		}
	}
	return sent, time.Since(started), nil
}

func (d *dataPlane) received() (int64, int64) {
	return atomic.LoadInt64(&d.bulkBytes), atomic.LoadInt64(&d.bulkPackets)
}

func (d *dataPlane) sinceLastBulk() time.Duration {
	last := atomic.LoadInt64(&d.lastBulk)
	if last == 0 {
		return time.Duration(1 << 62)
	}
	return time.Since(time.Unix(0, last))
}

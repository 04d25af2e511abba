package main

// The result line (lab/agents/agent_result.py AgentResult: the same keys, in its order) and
// the timeline events (lab/agents/contract.py Event, EventLog).

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

const implName = "pion"

// iceVersion is set at build time (-ldflags -X main.iceVersion=...) from the Debian package.
var iceVersion = "unknown"

func implVersion() string { return "pion/ice " + iceVersion }

type gathered struct {
	Host     int `json:"host"`
	Srflx    int `json:"srflx"`
	RelayUDP int `json:"relay-udp"`
	RelayTCP int `json:"relay-tcp"`
	RelayTLS int `json:"relay-tls"`
}

// count adds one candidate of a kind (agent_result.candidate_kind); false if unknown.
func (g *gathered) count(candidateType, relayProtocol string) bool {
	switch {
	case candidateType == "host":
		g.Host++
	case candidateType == "srflx":
		g.Srflx++
	case candidateType == "relay" && relayProtocol == "udp":
		g.RelayUDP++
	case candidateType == "relay" && relayProtocol == "tcp":
		g.RelayTCP++
	case candidateType == "relay" && relayProtocol == "tls":
		g.RelayTLS++
	default:
		return false
	}
	return true
}

type result struct {
	Peer               string   `json:"peer"`
	Role               string   `json:"role"`
	StartedAt          string   `json:"started_at"`
	Impl               string   `json:"impl"`
	ImplVersion        string   `json:"impl_version"`
	Outcome            string   `json:"outcome"`
	LocalType          *string  `json:"local_type"`
	RemoteType         *string  `json:"remote_type"`
	RelayProtocol      *string  `json:"relay_protocol"`
	LocalCandidate     *string  `json:"local_candidate"`
	RemoteCandidate    *string  `json:"remote_candidate"`
	TimeToConnectS     *float64 `json:"time_to_connect_s"`
	ChecksSent         *int     `json:"checks_sent"`
	RTTMs              *float64 `json:"rtt_ms"`
	ThroughputMbps     *float64 `json:"throughput_mbps"`
	CandidatesGathered gathered `json:"candidates_gathered"`
	Error              *string  `json:"error"`
	DurationS          *float64 `json:"duration_s"`
}

type endpoint struct {
	Host string
	Port int
	Type string
}

// formatCandidate is agent_result.format_candidate: "ip:port typ", "[v6]:port typ".
func formatCandidate(e endpoint) string {
	host := e.Host
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d %s", host, e.Port, e.Type)
}

// classifyOutcome is agent_result.classify_outcome for a connected side.
func classifyOutcome(localType, remoteType, relayProtocol string) string {
	switch {
	case localType == "relay":
		return "relay-" + relayProtocol
	case remoteType == "relay":
		return "relay-remote"
	default:
		return "direct"
	}
}

func strp(s string) *string     { return &s }
func floatp(f float64) *float64 { return &f }
func round3(f float64) float64  { return math.Round(f*1000) / 1000 }
func intp(i int) *int           { return &i }

// medianMs is agent_result.median_ms: the median of round trips, in ms with 3 decimals.
func medianMs(samples []time.Duration) *float64 {
	if len(samples) == 0 {
		return nil
	}
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	m := s[n/2].Seconds()
	if n%2 == 0 {
		m = (s[n/2-1].Seconds() + s[n/2].Seconds()) / 2
	}
	return floatp(round3(m * 1000))
}

// goodputMbps is agent_result.throughput_mbps.
func goodputMbps(bytes int64, seconds float64) *float64 {
	if seconds <= 0 || bytes < 0 {
		return nil
	}
	return floatp(round3(float64(bytes) * 8 / seconds / 1e6))
}

// report holds the result while the run fills it in; the watchdog may print it at any time.
type report struct {
	mu      sync.Mutex
	r       result
	t0      time.Time
	printed bool
}

func newReport(peer, role string, t0 time.Time) *report {
	started := t0.UTC().Format("2006-01-02T15:04:05.000") + "+00:00"
	return &report{t0: t0, r: result{
		Peer: peer, Role: role, StartedAt: started, Impl: implName, ImplVersion: implVersion(),
		Outcome: "fail",
	}}
}

func (p *report) update(f func(r *result)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.r)
}

// fail records the first error only: later ones are consequences of it.
func (p *report) fail(reason string) {
	p.update(func(r *result) {
		if r.Error == nil {
			r.Error = strp(reason)
		}
	})
}

func (p *report) snapshot() result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.r
}

func (p *report) errorReason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.r.Error == nil {
		return ""
	}
	return *p.r.Error
}

// emit prints the result line once, whoever calls first (the run or the watchdog).
func (p *report) emit() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.printed {
		return
	}
	p.r.DurationS = floatp(round3(time.Since(p.t0).Seconds()))
	line, err := json.Marshal(&p.r)
	if err != nil {
		line = []byte(`{"error":"internal-error"}`)
	}
	os.Stdout.Write(append(line, '\n'))
	p.printed = true
}

// Timeline event kinds (contract.EventKind).
const (
	evStart               = "start"
	evJoined              = "joined"
	evGathered            = "gathered"
	evGatheringDone       = "gathering-done"
	evDescriptionSent     = "description-sent"
	evDescriptionReceived = "description-received"
	evCheckSent           = "check-sent"
	evCheckAnswered       = "check-answered"
	evNominated           = "nominated"
	evConnected           = "connected"
	evPeerConnected       = "peer-connected"
	evExchanged           = "exchanged"
	evFailed              = "failed"
	evDone                = "done"
)

type event struct {
	T      float64 `json:"t"`
	Peer   string  `json:"peer"`
	Impl   string  `json:"impl"`
	Event  string  `json:"event"`
	Detail *string `json:"detail"`
}

// eventLog appends one JSON line per event, unbuffered (a killed agent loses nothing written).
type eventLog struct {
	mu   sync.Mutex
	file *os.File
	peer string
}

func openEventLog(path, peer string) (*eventLog, error) {
	l := &eventLog{peer: peer}
	if path == "" {
		return l, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return l, err
	}
	l.file = f
	return l, nil
}

func (l *eventLog) emit(kind string, detail *string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return
	}
	now := float64(time.Now().UnixNano()) / 1e9
	t, _ := strconv.ParseFloat(strconv.FormatFloat(now, 'f', 6, 64), 64)
	line, err := json.Marshal(event{T: t, Peer: l.peer, Impl: implName, Event: kind, Detail: detail})
	if err == nil {
		l.file.Write(append(line, '\n'))
	}
}

func (l *eventLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.Close()
		l.file = nil
	}
}

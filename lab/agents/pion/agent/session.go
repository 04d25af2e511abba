package main

// The ICE session on pion/ice v2: one UDP component, candidates from the host's addresses, a
// STUN server and every offered TURN transport; side a dials (controlling), side b accepts.

import (
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST recipe is HMAC-SHA1
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
)

const (
	turnCredentialTTL    = 3600 // seconds
	maxRemoteCandidates  = 64
	iceDisconnectedAfter = 5 * time.Second // pion's default
	// pion leaves Checking for Failed only after DisconnectedTimeout + FailedTimeout (default
	// 5 + 25 s, longer than a lab cell): 3 s more fails a call 8 s after its first check.
	iceFailedAfter = 3 * time.Second
)

// turnRESTCredentials is the seed's recipe (relay/turn/auth.py rest_password).
func turnRESTCredentials(secret, peer string, now time.Time) (string, string) {
	username := fmt.Sprintf("%d:%s", now.Unix()+turnCredentialTTL, peer)
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// iceURLs are the servers in pion's form; TURN over TLS is a turns: URL whose host is the name
// the relay's certificate is checked against (pion verifies it with the system roots, which
// main points at --cafile through SSL_CERT_FILE).
func iceURLs(cfg *config, now time.Time) []*ice.URL {
	var urls []*ice.URL
	if cfg.Stun != nil && cfg.Policy == "all" {
		urls = append(urls, &ice.URL{Scheme: ice.SchemeTypeSTUN, Host: cfg.Stun.Host, Port: cfg.Stun.Port, Proto: ice.ProtoTypeUDP})
	}
	if len(cfg.Turn) == 0 {
		return urls
	}
	username, password := turnRESTCredentials(cfg.TurnSecret, cfg.Peer, now)
	for _, t := range cfg.Turn {
		u := &ice.URL{Scheme: ice.SchemeTypeTURN, Host: t.Addr.Host, Port: t.Addr.Port, Username: username, Password: password}
		switch t.Transport {
		case "udp":
			u.Proto = ice.ProtoTypeUDP
		case "tcp":
			u.Proto = ice.ProtoTypeTCP
		case "tls":
			u.Scheme, u.Proto = ice.SchemeTypeTURNS, ice.ProtoTypeTCP
		}
		urls = append(urls, u)
	}
	return urls
}

type localCandidate struct {
	c             ice.Candidate
	relayProtocol string // udp | tcp | tls for a relay candidate, else ""
}

type session struct {
	cfg    *config
	agent  *ice.Agent
	checks *checkCounter
	events *eventLog

	mu         sync.Mutex
	candidates []localCandidate
	gatherDone chan struct{}
	failed     chan struct{} // closed when pion's connection state becomes Failed
	failOnce   sync.Once
}

func newSession(cfg *config, events *eventLog) (*session, error) {
	s := &session{
		cfg: cfg, events: events, checks: &checkCounter{events: events},
		gatherDone: make(chan struct{}), failed: make(chan struct{}),
	}
	types := []ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive, ice.CandidateTypeRelay}
	if cfg.Policy == "relay" {
		types = []ice.CandidateType{ice.CandidateTypeRelay}
	}
	disconnected, failed := iceDisconnectedAfter, iceFailedAfter
	agentConfig := &ice.AgentConfig{
		Urls:                urlsOrNil(iceURLs(cfg, time.Now())),
		NetworkTypes:        []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:      types,
		MulticastDNSMode:    ice.MulticastDNSModeDisabled, // no mDNS traffic, no .local names
		DisconnectedTimeout: &disconnected,
		FailedTimeout:       &failed,
		LoggerFactory:       &pionLoggerFactory{verbose: cfg.Verbose, checks: s.checks},
	}
	if len(cfg.HostIPs) > 0 {
		allowed := map[string]bool{}
		for _, ip := range cfg.HostIPs {
			allowed[net.ParseIP(ip).String()] = true
			if net.ParseIP(ip).IsLoopback() {
				agentConfig.IncludeLoopback = true
			}
		}
		agentConfig.IPFilter = func(ip net.IP) bool { return allowed[ip.String()] }
	}
	agent, err := ice.NewAgent(agentConfig)
	if err != nil {
		return nil, err
	}
	s.agent = agent
	if err := agent.OnCandidate(s.onCandidate); err != nil {
		return nil, err
	}
	if err := agent.OnConnectionStateChange(func(state ice.ConnectionState) {
		logf("INFO", "ICE connection state: %s", state)
		if state == ice.ConnectionStateFailed {
			s.failOnce.Do(func() { close(s.failed) })
		}
	}); err != nil {
		return nil, err
	}
	if err := agent.OnSelectedCandidatePairChange(func(local, remote ice.Candidate) {
		logf("INFO", "selected pair: %s -> %s", local, remote)
	}); err != nil {
		return nil, err
	}
	return s, nil
}

func urlsOrNil(urls []*ice.URL) []*ice.URL {
	if len(urls) == 0 {
		return nil
	}
	return urls
}

func (s *session) onCandidate(c ice.Candidate) {
	if c == nil {
		select {
		case <-s.gatherDone:
		default:
			close(s.gatherDone)
		}
		return
	}
	relayProtocol := ""
	if relay, ok := c.(*ice.CandidateRelay); ok {
		relayProtocol = relay.RelayProtocol()
	}
	s.mu.Lock()
	s.candidates = append(s.candidates, localCandidate{c, relayProtocol})
	s.mu.Unlock()
	s.events.emit(evGathered, strp(candidateSDP(c)))
}

// candidateSDP is the RFC 8839 "candidate:" attribute of a pion candidate.
func candidateSDP(c ice.Candidate) string { return "candidate:" + c.Marshal() }

// gather starts pion's gathering and waits for its end, at most timeout; candidates found
// later are not sent (the lab's signaling does not trickle).
func (s *session) gather(ctx context.Context, timeout time.Duration) ([]localCandidate, error) {
	if err := s.agent.GatherCandidates(); err != nil {
		return nil, err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-s.gatherDone:
	case <-timer.C:
		logf("WARN", "gathering not finished after %v: sending what was gathered", timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]localCandidate(nil), s.candidates...), nil
}

// addRemote gives pion the peer's candidates ("candidate:..." lines, with or without the
// prefix); unreadable ones are skipped with a warning.
func (s *session) addRemote(candidates []interface{}) int {
	added := 0
	for i, item := range candidates {
		if i >= maxRemoteCandidates {
			logf("WARN", "more than %d remote candidates: ignoring the rest", maxRemoteCandidates)
			break
		}
		entry, _ := item.(map[string]interface{})
		sdp, _ := entry["sdp"].(string)
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(sdp, "a="), "candidate:"))
		c, err := ice.UnmarshalCandidate(line)
		if err != nil {
			logf("WARN", "ignoring remote candidate %q: %v", sdp, err)
			continue
		}
		if err := s.agent.AddRemoteCandidate(c); err != nil {
			logf("WARN", "pion refused remote candidate %q: %v", sdp, err)
			continue
		}
		logf("INFO", "remote    %s (%v)", line, entry["relay_protocol"])
		added++
	}
	return added
}

// connect dials (controlling) or accepts (controlled) and waits for pion to select a pair;
// errICEFailed when pion's state becomes Failed first.
func (s *session) connect(ctx context.Context, ufrag, pwd string) (*ice.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.failed:
			cancel()
		case <-ctx.Done():
		}
	}()
	var conn *ice.Conn
	var err error
	if s.cfg.Controlling {
		conn, err = s.agent.Dial(ctx, ufrag, pwd)
	} else {
		conn, err = s.agent.Accept(ctx, ufrag, pwd)
	}
	select {
	case <-s.failed:
		return nil, errICEFailed
	default:
	}
	return conn, err
}

var errICEFailed = errors.New("pion: ICE connection state failed")

// selectedPair is the nominated pair, with the local relay candidate's TURN transport.
func (s *session) selectedPair() (endpoint, endpoint, string, error) {
	pair, err := s.agent.GetSelectedCandidatePair()
	if err != nil {
		return endpoint{}, endpoint{}, "", err
	}
	if pair == nil {
		return endpoint{}, endpoint{}, "", errors.New("no selected pair")
	}
	// pion hands out copies (Marshal + Unmarshal) that lose the relay protocol: find ours.
	relayProtocol := ""
	s.mu.Lock()
	for _, lc := range s.candidates {
		if lc.c.Equal(pair.Local) {
			relayProtocol = lc.relayProtocol
		}
	}
	s.mu.Unlock()
	local := endpoint{pair.Local.Address(), pair.Local.Port(), pair.Local.Type().String()}
	remote := endpoint{pair.Remote.Address(), pair.Remote.Port(), pair.Remote.Type().String()}
	return local, remote, relayProtocol, nil
}

func (s *session) checksSent() int { return int(s.checks.sentCount()) }

func (s *session) close(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		if err := s.agent.Close(); err != nil {
			logf("WARN", "closing the ICE agent: %v", err)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		logf("WARN", "closing the ICE agent: not done after %v", timeout)
	}
}

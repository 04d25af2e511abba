package main

// One side of a call, in the aioice agent's order (lab/agents/ice_agent.py Agent.run): join,
// gather, send the description, wait for the peer's, connect, "connected", wait for the
// peer's, ping exchange, optional throughput test, "done", wait for the peer's "done".

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

const (
	signalingRetry = 250 * time.Millisecond
	pingTimeout    = time.Second
	drainQuiet     = 300 * time.Millisecond
	drainMax       = 1500 * time.Millisecond
)

var errAborted = errors.New("aborted")

// abortError ends the run with a short reason (the result's error).
type abortError struct{ reason string }

func (e *abortError) Error() string { return e.reason }

func abortWith(reason string) error { return &abortError{reason} }

type run struct {
	cfg    *config
	rep    *report
	events *eventLog
	t0     time.Time

	ctx    context.Context // ends at the soft deadline or on abort
	cancel context.CancelFunc
	aborts chan string // the first reason to stop early (peer bye, peer left, signal...)

	sig  *signalingClient
	ice  *session
	data *dataPlane

	remoteDescription chan message
	peerConnected     chan struct{}
	peerDone          chan struct{}
	bulkEnd           chan message
	bulkResult        chan message
	byeSent           bool
}

func newRun(cfg *config, rep *report, events *eventLog, t0 time.Time) *run {
	soft := t0.Add(time.Duration((cfg.Timeout - cfg.softMargin()) * float64(time.Second)))
	ctx, cancel := context.WithDeadline(context.Background(), soft)
	return &run{
		cfg: cfg, rep: rep, events: events, t0: t0, ctx: ctx, cancel: cancel,
		aborts:            make(chan string, 1),
		remoteDescription: make(chan message, 1),
		peerConnected:     make(chan struct{}),
		peerDone:          make(chan struct{}),
		bulkEnd:           make(chan message, 1),
		bulkResult:        make(chan message, 1),
	}
}

// abort stops the run early with reason (the first one wins).
func (r *run) abort(reason string) {
	select {
	case r.aborts <- reason:
		r.cancel()
	default:
	}
}

// stopped says why the run must end now: the abort reason, or "timeout" at the deadline.
func (r *run) stopped(what string) error {
	select {
	case reason := <-r.aborts:
		r.aborts <- reason // keep it for later callers
		logf("WARN", "%s: aborted (%s)", what, reason)
		return abortWith(reason)
	default:
	}
	logf("WARN", "%s: deadline reached", what)
	return abortWith("timeout")
}

func (r *run) waitMessage(ch chan message, what string) (message, error) {
	select {
	case m := <-ch:
		return m, nil
	case <-r.ctx.Done():
		return nil, r.stopped(what)
	}
}

func (r *run) waitClosed(ch chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-r.ctx.Done():
		return r.stopped(what)
	}
}

func (r *run) send(m message) error {
	if err := r.sig.send(m); err != nil {
		logf("WARN", "signaling send %v failed: %v", m["type"], err)
		return abortWith("signaling-failed")
	}
	return nil
}

func (r *run) execute() error {
	cfg := r.cfg
	if err := r.join(); err != nil {
		return err
	}
	if err := r.gather(); err != nil {
		return err
	}
	remote, err := r.waitMessage(r.remoteDescription, "waiting for the peer's candidates")
	if err != nil {
		return err
	}
	r.events.emit(evDescriptionReceived, nil)
	if err := r.connect(remote); err != nil {
		return err
	}
	res := r.rep.snapshot()
	if err := r.send(message{
		"type": "connected", "peer": cfg.Peer, "outcome": res.Outcome,
		"local": res.LocalCandidate, "remote": res.RemoteCandidate,
	}); err != nil {
		return err
	}
	if err := r.waitClosed(r.peerConnected, "waiting for the peer to connect"); err != nil {
		return err
	}
	r.events.emit(evPeerConnected, nil)
	plane := r.plane(remote)
	if plane == "" {
		// pion/ice 2.3.1 has no candidate-pair RTT in its stats, so no RTT either.
		logf("INFO", "no data plane in common with the peer (%v): no ping exchange, no throughput", remote["data"])
	} else {
		if err := r.exchange(); err != nil {
			return err
		}
		if cfg.Controlling && cfg.ThroughputMbps != nil {
			if err := r.throughputSend(); err != nil {
				return err
			}
		} else if !cfg.Controlling && remote["throughput"] != nil {
			if err := r.throughputReceive(); err != nil {
				return err
			}
		}
	}
	res = r.rep.snapshot()
	if err := r.send(message{
		"type": "done", "peer": cfg.Peer, "rtt_ms": res.RTTMs, "throughput_mbps": res.ThroughputMbps,
	}); err != nil {
		return err
	}
	logf("INFO", "done; waiting for the peer's done")
	if err := r.waitClosed(r.peerDone, "waiting for the peer's done"); err != nil {
		return err
	}
	logf("INFO", "peer done")
	return nil
}

// plane is the data plane both sides speak: the first of side a's that side b has. A peer
// description without "data" is the aioice agent of before the field: datagrams.
func (r *run) plane(remote message) string {
	peer := []string{planeDatagram}
	if list, ok := remote["data"].([]interface{}); ok {
		peer = peer[:0]
		for _, item := range list {
			if s, ok := item.(string); ok {
				peer = append(peer, s)
			}
		}
	}
	if r.cfg.Controlling {
		return commonPlane(dataPlanes, peer)
	}
	return commonPlane(peer, dataPlanes)
}

func (r *run) join() error {
	cfg := r.cfg
	pool, err := caPool(cfg.CAFile)
	if err != nil {
		logf("ERROR", "--cafile: %v", err)
		return abortWith("signaling-failed")
	}
	name := cfg.SignalingName
	if name == "" {
		name = cfg.Signaling.Host
	}
	budget := time.Duration(maxf(2.0, 0.3*cfg.Timeout) * float64(time.Second))
	giveUp := time.Now().Add(budget)
	var lastErr error
	for attempt := 1; attempt <= int(budget/signalingRetry)+1; attempt++ {
		left := time.Until(giveUp)
		if dl, ok := r.ctx.Deadline(); ok && time.Until(dl) < left {
			left = time.Until(dl)
		}
		if left <= 0 || r.ctx.Err() != nil {
			break
		}
		r.sig, lastErr = dialSignaling(cfg.Signaling, name, pool, minDuration(5*time.Second, left))
		if lastErr == nil || isCertificateError(lastErr) {
			break
		}
		if attempt == 1 {
			logf("INFO", "signaling %s: %v; retrying", cfg.Signaling, lastErr)
		}
		select {
		case <-time.After(minDuration(signalingRetry, left)):
		case <-r.ctx.Done():
		}
	}
	if r.sig == nil {
		logf("ERROR", "cannot reach signaling %s: %v", cfg.Signaling, lastErr)
		return abortWith("signaling-failed")
	}
	if err := r.send(message{"type": "join", "room": cfg.Room, "peer": cfg.Peer}); err != nil {
		return err
	}
	var reply message
	select {
	case m, ok := <-r.sig.messages:
		if !ok {
			logf("ERROR", "signaling closed before joining")
			return abortWith("signaling-failed")
		}
		reply = m
	case <-r.ctx.Done():
		return r.stopped("joining the room")
	}
	if reply["type"] != "joined" {
		logf("ERROR", "join refused: %v", reply)
		return abortWith("signaling-failed")
	}
	logf("INFO", "joined room %q as %q; present: %v", cfg.Room, cfg.Peer, reply["peers"])
	r.events.emit(evJoined, nil)
	go r.dispatch()
	return nil
}

func (r *run) dispatch() {
	peerDone := false
	for m := range r.sig.messages {
		switch m["type"] {
		case "offer", "answer":
			select {
			case r.remoteDescription <- m:
			default:
			}
		case "connected":
			logf("INFO", "peer connected: %v -> %v", m["local"], m["remote"])
			closeOnce(r.peerConnected)
		case "done":
			peerDone = true
			closeOnce(r.peerDone)
		case "throughput-start":
			logf("INFO", "peer starts sending at %v Mbit/s", m["mbps"])
		case "throughput-end":
			select {
			case r.bulkEnd <- m:
			default:
			}
		case "throughput-result":
			select {
			case r.bulkResult <- m:
			default:
			}
		case "peer-joined":
			logf("INFO", "peer %v joined", m["peer"])
		case "bye":
			reason, _ := m["reason"].(string)
			if reason == "" {
				reason = "left"
			}
			logf("WARN", "peer says bye: %s", reason)
			r.abort("peer-" + reason)
		case "peer-left":
			if !peerDone {
				logf("WARN", "peer left the room")
				r.abort("peer-left")
			}
		case "error":
			logf("ERROR", "signaling error: %v", m)
			r.abort("signaling-failed")
		}
	}
	if !peerDone && !r.sig.isClosing() {
		logf("ERROR", "signaling connection lost")
		r.abort("signaling-failed")
	}
}

func (r *run) gather() error {
	cfg := r.cfg
	s, err := newSession(cfg, r.events)
	if err != nil {
		logf("ERROR", "pion agent: %v", err)
		return abortWith("gather-failed")
	}
	r.ice = s
	started := time.Now()
	logf("INFO", "gathering (policy %s, stun %v, turn %v)", cfg.Policy, cfg.Stun, cfg.Turn)
	candidates, err := s.gather(r.ctx, time.Duration(cfg.GatherTimeout*float64(time.Second)))
	if err != nil {
		if r.ctx.Err() != nil {
			return r.stopped("gathering candidates")
		}
		logf("ERROR", "gathering: %v", err)
		r.bye("gather-failed")
		return abortWith("gather-failed")
	}
	var counts gathered
	var described []message
	for _, lc := range candidates {
		if !counts.count(lc.c.Type().String(), lc.relayProtocol) {
			logf("WARN", "not offering %s (%s)", lc.c, lc.relayProtocol)
			continue
		}
		var relay interface{}
		if lc.relayProtocol != "" {
			relay = lc.relayProtocol
		}
		logf("INFO", "gathered %-9s %s", lc.c.Type(), candidateSDP(lc.c))
		described = append(described, message{"sdp": candidateSDP(lc.c), "relay_protocol": relay})
	}
	r.rep.update(func(res *result) { res.CandidatesGathered = counts })
	r.events.emit(evGatheringDone, strp(fmt.Sprintf("%d candidates", len(described))))
	logf("INFO", "gathered %+v in %.3f s", counts, time.Since(started).Seconds())
	if len(described) == 0 {
		logf("ERROR", "no candidates (see pion's warnings above)")
		r.bye("gather-failed")
		return abortWith("gather-failed")
	}
	ufrag, pwd, err := s.agent.GetLocalUserCredentials()
	if err != nil {
		return abortWith("internal-error")
	}
	var plan interface{}
	if cfg.Controlling && cfg.ThroughputMbps != nil {
		plan = message{"mbps": *cfg.ThroughputMbps, "seconds": *cfg.ThroughputSeconds}
	}
	kind := "answer"
	if cfg.Controlling {
		kind = "offer"
	}
	if err := r.send(message{
		"type": kind, "peer": cfg.Peer, "role": cfg.role(), "ufrag": ufrag, "pwd": pwd,
		"candidates": described, "throughput": plan, "impl": implName, "data": dataPlanes,
	}); err != nil {
		return err
	}
	r.events.emit(evDescriptionSent, nil)
	return nil
}

func (r *run) connect(remote message) error {
	ufrag, _ := remote["ufrag"].(string)
	pwd, _ := remote["pwd"].(string)
	candidates, ok := remote["candidates"].([]interface{})
	if ufrag == "" || pwd == "" || !ok {
		logf("ERROR", "bad description from the peer: %v", remote)
		return abortWith("signaling-failed")
	}
	r.ice.addRemote(candidates)
	started := time.Now()
	logf("INFO", "connecting as %s", r.cfg.role())
	conn, err := r.ice.connect(r.ctx, ufrag, pwd)
	checks := r.ice.checksSent()
	r.rep.update(func(res *result) { res.ChecksSent = intp(checks) })
	if err != nil {
		if errors.Is(err, errICEFailed) {
			logf("ERROR", "ICE failed after %.3f s, %d checks sent", time.Since(started).Seconds(), checks)
			r.bye("ice-failed")
			return abortWith("ice-failed")
		}
		if r.ctx.Err() != nil {
			return r.stopped("connecting")
		}
		logf("ERROR", "ICE: %v", err)
		r.bye("ice-failed")
		return abortWith("ice-failed")
	}
	elapsed := round3(time.Since(started).Seconds())
	local, peer, relayProtocol, err := r.ice.selectedPair()
	if err != nil {
		logf("ERROR", "connected, but no selected pair: %v", err)
		return abortWith("ice-failed")
	}
	if local.Type == "relay" && relayProtocol != "udp" && relayProtocol != "tcp" && relayProtocol != "tls" {
		logf("ERROR", "selected relay candidate with unknown TURN transport %q", relayProtocol)
		return abortWith("internal-error")
	}
	r.data = startDataPlane(conn)
	outcome := classifyOutcome(local.Type, peer.Type, relayProtocol)
	r.rep.update(func(res *result) {
		res.TimeToConnectS = floatp(elapsed)
		res.LocalType, res.RemoteType = strp(local.Type), strp(peer.Type)
		if local.Type == "relay" {
			res.RelayProtocol = strp(relayProtocol)
		}
		res.LocalCandidate = strp(formatCandidate(local))
		res.RemoteCandidate = strp(formatCandidate(peer))
		res.Outcome = outcome
	})
	pair := fmt.Sprintf("%s -> %s", formatCandidate(local), formatCandidate(peer))
	r.events.emit(evNominated, strp(pair))
	r.events.emit(evConnected, strp(outcome))
	logf("INFO", "nominated %s: %s after %.3f s, %d checks sent", pair, outcome, elapsed, checks)
	return nil
}

func (r *run) exchange() error {
	count := r.cfg.Exchange
	if count <= 0 {
		return nil
	}
	var rtts []time.Duration
	for seq := 0; seq < count; seq++ {
		dl, _ := r.ctx.Deadline()
		timeout := minDuration(pingTimeout, time.Until(dl))
		if timeout <= 0 || r.ctx.Err() != nil {
			return r.stopped("exchanging messages")
		}
		if rtt, ok := r.data.ping(uint32(seq), timeout); ok {
			rtts = append(rtts, rtt)
		}
	}
	median := medianMs(rtts)
	r.rep.update(func(res *result) { res.RTTMs = median })
	if median == nil {
		logf("ERROR", "exchange: none of %d pings answered", count)
		r.bye("exchange-failed")
		return abortWith("exchange-failed")
	}
	logf("INFO", "exchange: %d/%d answered, median RTT %.3f ms", len(rtts), count, *median)
	r.events.emit(evExchanged, strp(fmt.Sprintf("rtt %.3f ms", *median)))
	return nil
}

func (r *run) throughputSend() error {
	mbps, seconds := *r.cfg.ThroughputMbps, *r.cfg.ThroughputSeconds
	if err := r.send(message{"type": "throughput-start", "mbps": mbps, "seconds": seconds}); err != nil {
		return err
	}
	sent, duration, err := r.data.blast(mbps, seconds, r.ctx.Done())
	if errors.Is(err, errAborted) {
		return r.stopped("sending bulk data")
	}
	if err != nil {
		logf("ERROR", "bulk send failed: %v", err)
		r.bye("throughput-failed")
		return abortWith("throughput-failed")
	}
	logf("INFO", "sent %d datagrams of %d bytes in %.3f s", sent, datagramSize, duration.Seconds())
	if err := r.send(message{
		"type": "throughput-end", "packets": sent, "bytes": sent * datagramSize,
		"duration_s": duration.Seconds(),
	}); err != nil {
		return err
	}
	answer, err := r.waitMessage(r.bulkResult, "waiting for the throughput result")
	if err != nil {
		return err
	}
	if v, ok := answer["mbps"].(float64); ok {
		r.rep.update(func(res *result) { res.ThroughputMbps = floatp(v) })
	}
	logf("INFO", "peer received %v Mbit/s", answer["mbps"])
	return nil
}

func (r *run) throughputReceive() error {
	end, err := r.waitMessage(r.bulkEnd, "waiting for the peer's bulk data")
	if err != nil {
		return err
	}
	// datagrams may still be in flight after the signaling message
	drainUntil := time.Now().Add(drainMax)
	for time.Now().Before(drainUntil) && r.data.sinceLastBulk() <= drainQuiet {
		time.Sleep(50 * time.Millisecond)
	}
	received, packets := r.data.received()
	var mbps *float64
	if duration, ok := end["duration_s"].(float64); ok {
		mbps = goodputMbps(received, duration)
	}
	r.rep.update(func(res *result) { res.ThroughputMbps = mbps })
	logf("INFO", "received %d datagrams (%d bytes) of %v", packets, received, end["packets"])
	return r.send(message{"type": "throughput-result", "mbps": mbps, "bytes": received, "packets": packets})
}

// bye tells the peer this side gives up, so it ends at once with error "peer-<reason>".
func (r *run) bye(reason string) {
	if r.sig == nil || r.byeSent {
		return
	}
	r.byeSent = true
	if err := r.sig.send(message{"type": "bye", "reason": reason}); err != nil {
		logf("WARN", "bye: %v", err)
	}
}

// shutdown is bounded: tell the peer, close the ICE agent (TURN allocations), leave.
func (r *run) shutdown(hardDeadline time.Time) {
	if reason := r.rep.errorReason(); reason != "" && reason != "signaling-failed" && !strings.HasPrefix(reason, "peer-") {
		r.bye(reason)
	}
	if r.ice != nil {
		left := time.Until(hardDeadline) - 300*time.Millisecond
		r.ice.close(maxDuration(50*time.Millisecond, minDuration(2*time.Second, left)))
	}
	if r.sig != nil {
		r.sig.close()
	}
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func maxDuration(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

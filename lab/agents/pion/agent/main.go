// Command pion-agent is natlab's ICE agent on pion/ice v2: one side of a call, speaking the
// lab's agent contract (lab/agents/contract.py): the same flags, signaling, result line,
// timeline events and DATAGRAM data plane as the aioice agent (lab/agents/ice_agent.py).
//
// It prints exactly one JSON result line on stdout and exits within --timeout: a soft
// deadline ends the run and closes everything in time, and a watchdog prints the result and
// exits if that ever hangs. Exit codes: 0 connected without error, 1 otherwise, 2 usage.
//
// TURN over TLS trusts the lab CA the Go way: SSL_CERT_FILE names --cafile (and SSL_CERT_DIR
// no directory) before anything loads the system roots, so pion's turns: client, which
// verifies the relay's name with the system roots, trusts the lab CA and nothing else.
package main

import (
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const (
	exitOK, exitFailed, exitUsage = 0, 1, 2
	hardMargin                    = 400 * time.Millisecond // the watchdog fires this long before --timeout
)

func main() { os.Exit(agentMain(os.Args[1:])) }

func agentMain(argv []string) int {
	t0 := time.Now()
	cfg, known, err := parseConfig(argv, os.Stderr)
	if err != nil {
		rep := newReport(known.Peer, known.Role, t0)
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		logf("ERROR", "usage: %v", err)
		rep.fail("usage")
		rep.emit()
		return exitUsage
	}
	logPeer = cfg.Peer
	rep := newReport(cfg.Peer, cfg.role(), t0)
	events, err := openEventLog(cfg.Events, cfg.Peer)
	if err != nil {
		logf("WARN", "--events %s: %v (no timeline)", cfg.Events, err)
	}
	defer events.close()
	events.emit(evStart, strp(implVersion()))
	if cfg.CAFile != "" {
		os.Setenv("SSL_CERT_FILE", cfg.CAFile)
		os.Setenv("SSL_CERT_DIR", os.DevNull) // not a directory: no other roots
	}

	hardDeadline := t0.Add(time.Duration(cfg.Timeout*float64(time.Second)) - hardMargin)
	watchdog := time.AfterFunc(time.Until(hardDeadline), func() {
		rep.fail("timeout")
		logf("ERROR", "watchdog: --timeout reached, ending the process")
		events.emit(evFailed, strp("timeout"))
		rep.emit()
		os.Exit(exitFailed)
	})
	defer watchdog.Stop()

	r := newRun(cfg, rep, events, t0)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		logf("WARN", "%v received", sig)
		rep.fail("terminated")
		r.abort("terminated")
	}()

	if err := safeExecute(r); err != nil {
		var abort *abortError
		if errors.As(err, &abort) {
			rep.fail(abort.reason)
		} else {
			logf("ERROR", "internal error: %v", err)
			rep.fail("internal-error")
		}
	}
	r.shutdown(hardDeadline)
	reason := rep.errorReason()
	if reason != "" {
		events.emit(evFailed, strp(reason))
	} else {
		events.emit(evDone, nil)
	}
	rep.emit()
	res := rep.snapshot()
	if reason != "" {
		logf("INFO", "result: %s (error %s)", res.Outcome, reason)
		return exitFailed
	}
	logf("INFO", "result: %s", res.Outcome)
	return exitOK
}

// safeExecute turns a panic into an internal error, so the result line is still printed.
func safeExecute(r *run) (err error) {
	defer func() {
		if p := recover(); p != nil {
			logf("ERROR", "panic: %v", p)
			err = abortWith("internal-error")
		}
	}()
	return r.execute()
}

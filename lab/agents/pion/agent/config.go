package main

// The command line: the contract's flags (lab/agents/contract.py add_arguments) and their
// checks (AgentInputs.__post_init__), plus a few flags of this implementation only.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
)

// Bounds shared with the contract (lab/agents/contract.py).
const (
	minTimeoutS          = 2.0
	maxExchange          = 1000
	maxThroughputMbps    = 1000.0
	maxThroughputSeconds = 60.0
	defaultExchange      = 10
	defaultGatherTimeout = 5.0
)

var defaultPorts = map[string]int{"signaling": 443, "stun": 3478, "udp": 3478, "tcp": 3478, "tls": 443}

type hostPort struct {
	Host string // an IP address or a name (a TLS server's name)
	Port int
}

func (h hostPort) String() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// parseHostPort reads HOST, HOST:PORT, [V6] or [V6]:PORT, as contract.parse_hostport does.
func parseHostPort(text string, defaultPort int) (hostPort, error) {
	text = strings.TrimSpace(text)
	var host, portText string
	switch {
	case strings.HasPrefix(text, "["):
		end := strings.Index(text, "]")
		if end < 0 {
			host, portText = text[1:], ""
		} else {
			host, portText = text[1:end], strings.TrimPrefix(text[end+1:], ":")
		}
	case strings.Count(text, ":") == 1:
		parts := strings.SplitN(text, ":", 2)
		host, portText = parts[0], parts[1]
	default:
		host = text
	}
	if host == "" {
		return hostPort{}, fmt.Errorf("%q: no host", text)
	}
	port := defaultPort
	if portText != "" {
		p, err := strconv.Atoi(portText)
		if err != nil {
			return hostPort{}, fmt.Errorf("%q: port is not a number", text)
		}
		port = p
	}
	if port <= 0 || port >= 65536 {
		return hostPort{}, fmt.Errorf("%q: port out of range", text)
	}
	return hostPort{host, port}, nil
}

type turnServer struct {
	Transport string // udp | tcp | tls (client-to-TURN)
	Addr      hostPort
}

type config struct {
	Peer              string
	Controlling       bool
	Room              string
	Signaling         hostPort
	SignalingName     string
	CAFile            string
	Stun              *hostPort
	Turn              []turnServer
	TurnSecret        string
	Realm             string
	Policy            string
	Timeout           float64
	Exchange          int
	ThroughputMbps    *float64
	ThroughputSeconds *float64
	Events            string
	Workdir           string
	// this implementation only
	HostIPs       []string
	GatherTimeout float64
	Verbose       bool
}

func (c *config) role() string {
	if c.Controlling {
		return "controlling"
	}
	return "controlled"
}

// optionalFloat is a float flag that remembers whether it was given.
type optionalFloat struct{ value *float64 }

func (o *optionalFloat) String() string {
	if o.value == nil {
		return ""
	}
	return strconv.FormatFloat(*o.value, 'g', -1, 64)
}

func (o *optionalFloat) Set(text string) error {
	v, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return errors.New("not a number")
	}
	o.value = &v
	return nil
}

type listFlag []string

func (l *listFlag) String() string        { return strings.Join(*l, ",") }
func (l *listFlag) Set(text string) error { *l = append(*l, text); return nil }

// partial is what a usage error still knows, for its result line.
type partial struct{ Peer, Role string }

// parseConfig reads argv (without the program name); the error is a usage error.
func parseConfig(argv []string, stderr io.Writer) (*config, partial, error) {
	fs := flag.NewFlagSet("pion-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	peer := fs.String("peer", "", "a (controlling, offers) or b (controlled, answers)")
	controlling := fs.Bool("controlling", false, "the controlling side")
	controlled := fs.Bool("controlled", false, "the controlled side")
	room := fs.String("room", "", "signaling room")
	signaling := fs.String("signaling", "", "HOST:PORT of the signaling server (default port 443)")
	signalingName := fs.String("signaling-name", "", "TLS name to verify (default: the signaling host)")
	cafile := fs.String("cafile", "", "lab CA (PEM) for signaling TLS and TURN over TLS")
	stun := fs.String("stun", "", "HOST:PORT of the STUN server")
	turnFlags := map[string]*string{}
	for _, t := range []string{"udp", "tcp", "tls"} {
		turnFlags[t] = fs.String("turn-"+t, "", "HOST:PORT of the TURN server over "+t)
	}
	secret := fs.String("turn-secret", "", "TURN REST shared secret (static-auth-secret)")
	realm := fs.String("realm", "natlab", "TURN realm (the server announces it)")
	policy := fs.String("policy", "all", "all | relay")
	timeout := &optionalFloat{}
	fs.Var(timeout, "timeout", "SECONDS: the whole run, result line included")
	exchange := fs.Int("exchange", defaultExchange, "pings over the data plane")
	mbps, seconds := &optionalFloat{}, &optionalFloat{}
	fs.Var(mbps, "throughput-mbps", "bulk test rate (the controlling side sends)")
	fs.Var(seconds, "throughput-seconds", "bulk test duration")
	events := fs.String("events", "", "append timeline events (JSON lines) to FILE")
	workdir := fs.String("workdir", "", "the agent's own directory")
	var hostIPs listFlag
	fs.Var(&hostIPs, "host-ip", "host candidate address; repeatable (default: every non-loopback one)")
	gatherTimeout := fs.Float64("gather-timeout", defaultGatherTimeout, "seconds to wait for candidates")
	verbose := fs.Bool("verbose", false, "pion's own debug and trace logs too")

	err := fs.Parse(argv)
	known := partial{Peer: *peer}
	if *controlling != *controlled {
		known.Role = map[bool]string{true: "controlling", false: "controlled"}[*controlling]
	}
	if err != nil {
		return nil, known, err
	}
	if fs.NArg() > 0 {
		return nil, known, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := &config{
		Peer: *peer, Controlling: *controlling, Room: *room, SignalingName: *signalingName,
		CAFile: *cafile, TurnSecret: *secret, Realm: *realm, Policy: *policy,
		Exchange: *exchange, ThroughputMbps: mbps.value, ThroughputSeconds: seconds.value,
		Events: *events, Workdir: *workdir, HostIPs: hostIPs, GatherTimeout: *gatherTimeout,
		Verbose: *verbose,
	}
	if err := cfg.fill(*signaling, *stun, turnFlags, timeout.value, *controlled); err != nil {
		return nil, known, err
	}
	return cfg, known, nil
}

func (c *config) fill(signaling, stun string, turn map[string]*string, timeout *float64, controlled bool) error {
	switch {
	case c.Peer != "a" && c.Peer != "b":
		return fmt.Errorf("--peer %q: want a or b", c.Peer)
	case c.Controlling == controlled:
		return errors.New("give exactly one of --controlling and --controlled")
	case c.Controlling != (c.Peer == "a"):
		return errors.New("peer a is the controlling side and peer b the controlled one")
	case c.Room == "":
		return errors.New("--room is required")
	case signaling == "":
		return errors.New("--signaling is required")
	case timeout == nil:
		return errors.New("--timeout is required")
	case *timeout < minTimeoutS:
		return fmt.Errorf("--timeout must be at least %g s", minTimeoutS)
	case c.Policy != "all" && c.Policy != "relay":
		return fmt.Errorf("--policy %q: want all or relay", c.Policy)
	case c.Exchange < 0 || c.Exchange > maxExchange:
		return fmt.Errorf("--exchange must be within 0..%d", maxExchange)
	case (c.ThroughputMbps == nil) != (c.ThroughputSeconds == nil):
		return errors.New("--throughput-mbps and --throughput-seconds go together")
	case c.GatherTimeout <= 0:
		return errors.New("--gather-timeout must be positive")
	}
	c.Timeout = *timeout
	if c.ThroughputMbps != nil {
		if *c.ThroughputMbps <= 0 || *c.ThroughputMbps > maxThroughputMbps {
			return fmt.Errorf("--throughput-mbps must be within (0, %g]", maxThroughputMbps)
		}
		if *c.ThroughputSeconds <= 0 || *c.ThroughputSeconds > maxThroughputSeconds {
			return fmt.Errorf("--throughput-seconds must be within (0, %g]", maxThroughputSeconds)
		}
	}
	var err error
	if c.Signaling, err = parseHostPort(signaling, defaultPorts["signaling"]); err != nil {
		return err
	}
	if stun != "" {
		hp, err := parseHostPort(stun, defaultPorts["stun"])
		if err != nil {
			return err
		}
		c.Stun = &hp
	}
	for _, t := range []string{"udp", "tcp", "tls"} {
		if *turn[t] == "" {
			continue
		}
		hp, err := parseHostPort(*turn[t], defaultPorts[t])
		if err != nil {
			return err
		}
		c.Turn = append(c.Turn, turnServer{t, hp})
	}
	if len(c.Turn) > 0 && c.TurnSecret == "" {
		return errors.New("TURN needs --turn-secret")
	}
	for _, t := range c.Turn {
		if t.Transport == "tls" && c.CAFile == "" {
			return errors.New("--cafile is needed for --turn-tls")
		}
	}
	for _, ip := range c.HostIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("--host-ip %q: not an IP address", ip)
		}
	}
	return nil
}

// softMargin is the time kept after the soft deadline to say bye and close TURN allocations
// (as the aioice agent).
func (c *config) softMargin() float64 {
	return math.Min(3.0, math.Max(1.0, 0.15*c.Timeout))
}

package main

// The signaling client: TLS to the lab's server, one JSON object per line (lab/agents/signaling.py).

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxMessageBytes = 64 * 1024 // the server's limit per line
	writeTimeout    = 5 * time.Second
)

type message = map[string]interface{}

type signalingClient struct {
	conn     *tls.Conn
	mu       sync.Mutex // one writer at a time
	messages chan message
	closed   chan struct{} // closed when the read side ends
	closing  int32         // set by close(): the end of the stream is ours, not news
}

// caPool is the lab CA alone: what the signaling server's certificate must chain to.
func caPool(cafile string) (*x509.CertPool, error) {
	if cafile == "" {
		return nil, nil // the system's roots
	}
	pem, err := os.ReadFile(cafile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", cafile)
	}
	return pool, nil
}

// dialSignaling connects and verifies the server's certificate against name (an IP or a DNS
// name, as the certificate's SANs have it).
func dialSignaling(addr hostPort, name string, pool *x509.CertPool, timeout time.Duration) (*signalingClient, error) {
	dialer := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(dialer, "tcp", addr.String(), &tls.Config{
		RootCAs:    pool,
		ServerName: name,
		MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		return nil, err
	}
	c := &signalingClient{conn: conn, messages: make(chan message, 64), closed: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

// isCertificateError: a certificate problem does not go away by retrying.
func isCertificateError(err error) bool {
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

func (c *signalingClient) readLoop() {
	defer close(c.closed)
	defer close(c.messages)
	scanner := bufio.NewScanner(c.conn)
	scanner.Buffer(make([]byte, 4096), maxMessageBytes+1)
	for scanner.Scan() {
		var m message
		if err := json.Unmarshal(scanner.Bytes(), &m); err != nil {
			logf("WARN", "signaling: ignoring a line that is not JSON: %v", err)
			continue
		}
		if _, ok := m["type"].(string); !ok {
			logf("WARN", "signaling: ignoring a message without a type")
			continue
		}
		c.messages <- m
	}
	if err := scanner.Err(); err != nil && !c.isClosing() {
		logf("WARN", "signaling: read: %v", err)
	}
}

func (c *signalingClient) send(m interface{}) error {
	line, err := json.Marshal(m)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err = c.conn.Write(append(line, '\n'))
	return err
}

func (c *signalingClient) isClosing() bool { return atomic.LoadInt32(&c.closing) == 1 }

func (c *signalingClient) close() {
	atomic.StoreInt32(&c.closing, 1)
	c.conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	c.conn.Close()
}

package main

// Logs on stderr, and pion's own logs through a logging.LoggerFactory that also counts the
// connectivity checks pion sends: pion/ice 2.3.1 fills no RequestsSent in its candidate-pair
// stats (agent_stats.go leaves it commented out), but every Binding request it sends goes
// through Agent.sendBindingRequest, which logs "ping STUN from %s to %s" at trace level.

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
)

const (
	pionCheckSent     = "ping STUN from %s to %s"                      // agent.go sendBindingRequest
	pionCheckAnswered = "inbound STUN (SuccessResponse) from %s to %s" // selection.go
	maxCheckEvents    = 100                                            // per kind, bounds the timeline
)

var (
	logPeer  = "?"
	logMutex sync.Mutex
)

// logf writes one line on stderr, in the aioice agent's layout.
func logf(level, format string, args ...interface{}) {
	logLine("natlab.pion", level, fmt.Sprintf(format, args...))
}

func logLine(scope, level, text string) {
	now := time.Now().UTC().Format("15:04:05.000")
	logMutex.Lock()
	defer logMutex.Unlock()
	fmt.Fprintf(os.Stderr, "%sZ %s %s %s %s\n", now, logPeer, scope, level, text)
}

// checkCounter counts pion's Binding requests and records them as timeline events.
type checkCounter struct {
	sent, answered int64
	events         *eventLog
}

type pionLoggerFactory struct {
	verbose bool
	checks  *checkCounter
}

func (f *pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{scope: "pion." + scope, verbose: f.verbose, checks: f.checks}
}

type pionLogger struct {
	scope   string
	verbose bool
	checks  *checkCounter
}

func (l *pionLogger) Tracef(format string, args ...interface{}) {
	if l.checks != nil && len(args) == 2 {
		switch format {
		case pionCheckSent:
			if n := atomic.AddInt64(&l.checks.sent, 1); n <= maxCheckEvents {
				l.checks.events.emit(evCheckSent, strp(fmt.Sprintf("%v -> %v", args[0], args[1])))
			}
		case pionCheckAnswered: // from remote to local
			if n := atomic.AddInt64(&l.checks.answered, 1); n <= maxCheckEvents {
				l.checks.events.emit(evCheckAnswered, strp(fmt.Sprintf("%v -> %v", args[1], args[0])))
			}
		}
	}
	if l.verbose {
		logLine(l.scope, "TRACE", fmt.Sprintf(format, args...))
	}
}

func (l *pionLogger) Trace(msg string) {
	if l.verbose {
		logLine(l.scope, "TRACE", msg)
	}
}

func (l *pionLogger) Debug(msg string) {
	if l.verbose {
		logLine(l.scope, "DEBUG", msg)
	}
}

func (l *pionLogger) Debugf(format string, args ...interface{}) {
	if l.verbose {
		logLine(l.scope, "DEBUG", fmt.Sprintf(format, args...))
	}
}

func (l *pionLogger) Info(msg string) { logLine(l.scope, "INFO", msg) }
func (l *pionLogger) Infof(format string, args ...interface{}) {
	logLine(l.scope, "INFO", fmt.Sprintf(format, args...))
}
func (l *pionLogger) Warn(msg string) { logLine(l.scope, "WARN", msg) }
func (l *pionLogger) Warnf(format string, args ...interface{}) {
	logLine(l.scope, "WARN", fmt.Sprintf(format, args...))
}
func (l *pionLogger) Error(msg string) { logLine(l.scope, "ERROR", msg) }
func (l *pionLogger) Errorf(format string, args ...interface{}) {
	logLine(l.scope, "ERROR", fmt.Sprintf(format, args...))
}

// stripLines keeps a log detail on one line.
func stripLines(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func (c *checkCounter) sentCount() int64 { return atomic.LoadInt64(&c.sent) }

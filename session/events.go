package session

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/lxzan/gws"
)

// events adapts the Hub to gws.Event; gwsLogger below, to gws's logger.
type events Hub

func sessionOf(c *gws.Conn) *Session {
	v, _ := c.Session().Load("s")
	s, _ := v.(*Session)
	return s
}

// OnOpen does nothing: open ran before the read loop started.
func (e *events) OnOpen(*gws.Conn) {}

func (e *events) OnClose(c *gws.Conn, err error) {
	h := (*Hub)(e)
	s := sessionOf(c)
	h.unregister(s) // false if it was evicted (a newer login replaced it): counted out then
	h.stats.closed.Add(1)
	code, reason := closeCause(s, err)
	h.log.Info("session closed", append(s.identity(),
		"code", code, "reason", reason, "duration", time.Since(s.info.Connected).Round(time.Millisecond).String())...)
	if h.cfg.Observer != nil {
		h.cfg.Observer.SessionClosed(s.info)
	}
}

// closeCause says why a session ended, for the log.
func closeCause(s *Session, err error) (uint16, string) {
	if dc, ok := s.serverDisconnect(); ok {
		return dc.Code, dc.Reason
	}
	var ce *gws.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		if len(ce.Reason) > 0 {
			return ce.Code, "client closed: " + string(ce.Reason)
		}
		return ce.Code, "client closed"
	case errors.As(err, &ne) && ne.Timeout():
		return 0, "idle timeout"
	case err != nil && strings.Contains(err.Error(), "message too large"):
		return CloseTooLarge, "message too large"
	case err != nil:
		return 0, "connection lost: " + err.Error()
	}
	return 0, "connection lost"
}

func (e *events) OnPing(c *gws.Conn, payload []byte) {
	h := (*Hub)(e)
	h.stats.clientFrames.Add(1)
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
	sessionOf(c).oweWSPong(payload)
}

func (e *events) OnPong(c *gws.Conn, _ []byte) {
	h := (*Hub)(e)
	h.stats.clientFrames.Add(1)
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
}

func (e *events) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	h := (*Hub)(e)
	h.stats.clientFrames.Add(1)
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
	if m.Opcode == gws.OpcodeText && isPing(m.Bytes()) {
		sessionOf(c).owePong()
	}
	// Anything else is ignored: upstream messages come in a later version.
}

// gwsLogger bridges gws's Error(v...) logger to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("gws: " + fmt.Sprint(v...)) }

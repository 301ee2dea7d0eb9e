package session

import (
	"bytes"
	"context"
	"encoding/json"
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
	h.leaveAll(s)   // before it counts as closed
	h.stats.closed.Add(1)
	code, reason := closeCause(s, err)
	h.log.Info("session closed", append(s.identity(),
		"code", code, "reason", reason, "duration", time.Since(s.info.Connected).Round(time.Millisecond).String())...)
	if h.cfg.Observer != nil {
		h.cfg.Observer.SessionClosed(s.info)
	}
	if h.cfg.Upstream != nil {
		if code == 0 {
			code = CloseAbnormal
		}
		h.cfg.Upstream.Disconnected(s.info, code, reason)
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
	if s := (*Hub)(e).frameIn(c); s != nil {
		s.oweWSPong(payload)
	}
}

func (e *events) OnPong(c *gws.Conn, _ []byte) { (*Hub)(e).frameIn(c) }

func (e *events) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	h := (*Hub)(e)
	s := h.frameIn(c)
	if s == nil || m.Opcode != gws.OpcodeText {
		return
	}
	f, err := parseClientFrame(m.Bytes())
	if err != nil {
		// Not a request. A frame that is not a JSON object at all is
		// most likely a message someone meant to send: say what a message
		// looks like. One with no "type" or a type we do not know is
		// ignored (a later version's request).
		if errors.Is(err, errNotObject) {
			_ = s.Enqueue(errorFrame("message", "", `frame is not a JSON object: a message is {"type":"message","data":<JSON>}`))
		}
		return
	}
	switch f.Type {
	case "ping":
		s.owePong()
	case "refresh":
		h.refresh(s, f)
	case "message":
		h.message(s, f)
	case "join":
		h.clientJoin(s, f)
	case "leave":
		h.clientLeave(s, f)
	}
	// Anything else is ignored: upstream messages come in a later version.
}

// frameIn counts a client frame, pushes the idle deadline back and takes
// the frame from the client's rate limit. It returns the session, or nil
// if the frame is over the limit: the session is then closing with 4008,
// and the frame is dropped.
func (h *Hub) frameIn(c *gws.Conn) *Session {
	h.stats.clientFrames.Add(1)
	s := sessionOf(c)
	if s.isClosing() {
		return nil // the server closed it: what the client still sends is read and dropped (writeCloseLingering)
	}
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
	if h.cfg.MaxClientRate <= 0 || s.allow(h.cfg.MaxClientRate) {
		return s
	}
	if s.closeFirst(disconnectTooMany) {
		h.stats.tooMany.Add(1)
		h.log.Warn("client over its rate limit: closing with 4008",
			append(s.identity(), "max_client_rate", h.cfg.MaxClientRate)...)
	}
	return nil
}

// message hands a client's message to the Upstream: its "data" must be
// JSON (any value but null); otherwise, or if there is no backend, or the
// Upstream refuses it (its queue is full), the client gets an error frame
// with op "message" and its id, and nothing is sent.
func (h *Hub) message(s *Session, f clientFrame) {
	var reason string
	switch {
	case len(f.Data) == 0 || string(f.Data) == "null":
		reason = `no data: a message needs "data", any JSON value but null`
	case h.cfg.Upstream == nil:
		reason = "no backend: this node sends client messages nowhere (upstream.url is not set)"
	}
	if reason == "" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, f.Data); err != nil {
			reason = "malformed JSON in data"
		} else if err := h.cfg.Upstream.Message(s.info, f.ID, buf.Bytes()); err != nil {
			reason = err.Error()
		}
	}
	if reason != "" {
		h.stats.messagesRefused.Add(1)
		_ = s.Enqueue(errorFrame("message", f.ID, reason))
		return
	}
	h.stats.messages.Add(1)
}

// refresh takes a refresh frame's token if it is valid and names the
// session's user and device: the session then lives until that token's
// expiry, and the client gets "refreshed". Otherwise the client gets an
// error frame and nothing changes.
func (h *Hub) refresh(s *Session, f clientFrame) {
	id, err := h.cfg.Auth.Verify(f.Token)
	var reason string
	switch {
	case err != nil:
		reason = err.Error()
	case id.User != s.info.User:
		reason = "token is for another user"
	case id.Device != s.info.Device:
		reason = "token is for another device"
	}
	if reason != "" {
		h.stats.refreshesRefused.Add(1)
		h.log.Info("token refresh refused", append(s.identity(), "reason", reason)...)
		_ = s.Enqueue(errorFrame("refresh", f.ID, "refresh refused: "+reason))
		return
	}
	if s.refreshed(id.Expires) {
		s.setAllowedRooms(id.Rooms) // the rooms joined stay
		h.stats.refreshes.Add(1)
		h.log.Debug("token refreshed", append(s.identity(), "expires", id.Expires)...)
		_ = s.Enqueue(refreshedFrame(id.Expires))
	}
}

// clientJoin answers a join frame: joined, or an error frame saying why
// not (a bad room name, not allowed by the token's rooms claim, too many
// rooms). A session closing gets nothing.
func (h *Hub) clientJoin(s *Session, f clientFrame) {
	err := clientRoomErr(f)
	if err == nil {
		err = h.queued(s, h.join(s, f.Room, true))
	}
	h.answerRoomErr(s, "join", f, err)
}

// clientLeave answers a leave frame: left (also if s was not in the
// room), or an error frame for a bad room name.
func (h *Hub) clientLeave(s *Session, f clientFrame) {
	err := clientRoomErr(f)
	if err == nil {
		err = h.queued(s, h.leave(s, f.Room))
	}
	h.answerRoomErr(s, "leave", f, err)
}

// clientRoomErr checks a join or leave frame's room.
func clientRoomErr(f clientFrame) error {
	if f.roomNotString {
		return errors.New("bad room name: not a string")
	}
	return ValidRoom(f.Room)
}

// answerRoomErr sends the client an error frame for a join or leave
// refused with err; nothing if err is nil (answered already) or the
// session is closing.
func (h *Hub) answerRoomErr(s *Session, op string, f clientFrame, err error) {
	if err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrSlowConsumer) {
		return
	}
	if h.log.Enabled(context.Background(), slog.LevelDebug) {
		h.log.Debug("room request refused", append(s.identity(), "op", op, "room", f.Room, "reason", err.Error())...)
	}
	_ = s.Enqueue(errorFrame(op, f.ID, err.Error()))
}

// gwsLogger bridges gws's Error(v...) logger to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("gws: " + fmt.Sprint(v...)) }

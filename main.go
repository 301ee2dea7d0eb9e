// Command wsmesh runs a node of a WebSocket gateway cluster: clients hold a
// WebSocket to any node, and POST /send on any node reaches them.
//
//	wsmesh [serve] [-config FILE]
//	wsmesh token -user ID [-device NAME] [-rooms LIST] [-ttl 1h] [-config FILE]
//	wsmesh version
//	wsmesh bench [flags]
//
// main is the CLI only: it parses the command line, loads the config,
// builds the logger and handles signals; internal/node wires and runs the
// node itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"

	"wsmesh/config"
	"wsmesh/internal/node"
	"wsmesh/loadgen"
	"wsmesh/session"
)

const usage = `wsmesh: a broker-less WebSocket gateway cluster.

Usage:
  wsmesh [serve] [-config FILE]     run a node (the default command)
  wsmesh token -user ID [-device NAME] [-rooms LIST] [-ttl 1h] [-config FILE]
                                    print a client token signed with the config's jwt_secret
  wsmesh version                    print the version and VCS revision
  wsmesh bench [flags]              load-test nodes: clients, POST /send, latency (bench -h)

With no -config, ./config.toml is read if present, else built-in defaults
(one node on 127.0.0.1:8080). Any key can be overridden by an environment
variable WSMESH_<SECTION>_<KEY>, e.g. WSMESH_HTTP_LISTEN=127.0.0.1:9000.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return cmdServe(args, stdout, stderr)
	case "token":
		return cmdToken(args, stdout, stderr)
	case "bench":
		return loadgen.Main(args, stdout, stderr)
	case "version":
		if len(args) > 0 {
			fmt.Fprintf(stderr, "wsmesh version: unexpected argument %q\n\n%s", args[0], usage)
			return 2
		}
		fmt.Fprintln(stdout, node.Version())
		return 0
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wsmesh: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// parseFlags parses a subcommand's flags: -h prints usage to stdout (exit
// 0); a bad flag or a stray argument prints it to stderr (exit 2).
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (exit int, ok bool) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0, false
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh %s: %v\n\n%s", fs.Name(), err, usage)
		return 2, false
	}
	return 0, true
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (default ./config.toml if present)")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh: %v\n", err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := node.Run(ctx, cfg, log, node.Hooks{}); err != nil {
		log.Error("node failed", "err", err)
		return 1
	}
	return 0
}

// newLogger builds the process logger: tint on a terminal, JSON otherwise.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	format := c.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "tint"
			}
		}
	}
	switch format {
	case "tint":
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
	case "text":
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func cmdToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (default ./config.toml if present)")
	user := fs.String("user", "", "user id (the token's sub claim; required)")
	device := fs.String("device", "", `device name (default "default")`)
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	roomList := fs.String("rooms", "", `rooms the client may join itself, comma separated: names, or prefixes ending in * (e.g. "live:*,news"; "*": any)`)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *user == "" {
		fmt.Fprintf(stderr, "wsmesh token: -user is required\n\n%s", usage)
		return 2
	}
	var rooms []string
	for r := range strings.SplitSeq(*roomList, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if err := session.ValidRoom(r); err != nil {
			fmt.Fprintf(stderr, "wsmesh token: -rooms %q: %v\n\n%s", r, err, usage)
			return 2
		}
		rooms = append(rooms, r)
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh: %v\n", err)
		return 1
	}
	if cfg.GeneratedSecret {
		fmt.Fprintf(stderr, "wsmesh token: no auth.jwt_secret configured (config: %s, WSMESH_AUTH_JWT_SECRET unset): a token would not verify on any node; pass -config FILE\n", cfg.Source)
		return 1
	}
	auth, err := session.NewAuthenticator([]byte(cfg.Auth.JWTSecret))
	if err == nil {
		var tok string
		if tok, err = auth.MintRooms(*user, *device, rooms, *ttl); err == nil {
			fmt.Fprintln(stdout, tok)
			return 0
		}
	}
	fmt.Fprintf(stderr, "wsmesh token: %v\n", err)
	return 1
}

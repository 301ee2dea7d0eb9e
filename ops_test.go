package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"wsmesh/cluster"
	"wsmesh/config"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/clustertest"
	"wsmesh/internal/testsupport/nodetest"
)

const (
	dashboardFile  = "deploy/grafana-dashboard.json"
	alertsFile     = "deploy/alerts.yml"
	alertsTestFile = "deploy/alerts_test.yml"
)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's
}

// dashboardExprs returns each PromQL expression of deploy/grafana-dashboard.json
// with the title of its panel.
func dashboardExprs(t *testing.T) (*dashboard, map[string]string) {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	exprs := map[string]string{}
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("%s: panel %q has a target with no expr", dashboardFile, p.Title)
				}
				exprs[tg.Expr] = p.Title
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return &d, exprs
}

// alertExprs returns each expr of deploy/alerts.yml with its alert's name.
// It reads the one layout the file uses (no YAML library in go.mod): an
// `- alert: Name` line, then `expr: ...` on one line or as a `>-` block of
// more-indented lines.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exprs := map[string]string{}
	var alert, block string
	blockIndent := -1
	flush := func() {
		if blockIndent >= 0 {
			exprs[alert] = strings.TrimSpace(block)
			block, blockIndent = "", -1
		}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if blockIndent >= 0 {
			if trimmed == "" || indent > blockIndent {
				block += " " + trimmed
				continue
			}
			flush()
		}
		switch {
		case strings.HasPrefix(trimmed, "- alert:"):
			alert = strings.TrimSpace(strings.TrimPrefix(trimmed, "- alert:"))
		case strings.HasPrefix(trimmed, "expr:"):
			v := strings.TrimSpace(strings.TrimPrefix(trimmed, "expr:"))
			if v == ">-" || v == ">" || v == "|" || v == "|-" {
				blockIndent = indent
			} else {
				exprs[alert] = v
			}
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(exprs) == 0 {
		t.Fatalf("%s: no alert exprs found", alertsFile)
	}
	return exprs
}

// metricIdent finds the metric names an expression uses: every identifier
// starting with wsmesh_, process_ or go_ (label names and values do not).
var metricIdent = regexp.MustCompile(`\b(?:wsmesh|process|go)_[A-Za-z0-9_]*[A-Za-z0-9]`)

// upOnly matches an expression on Prometheus's own up series, which no
// node exports.
var upOnly = regexp.MustCompile(`^up\{[^}]*\} == 0$`)

// scrape is what one GET /metrics exposed: each sample's name and each
// family's type from its # TYPE line.
type scrape struct {
	samples map[string]bool
	types   map[string]string
}

func parseScrape(text string) scrape {
	s := scrape{samples: map[string]bool{}, types: map[string]string{}}
	for line := range strings.SplitSeq(text, "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(f, " "); ok {
				s.types[name] = typ
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			s.samples[line[:i]] = true
		}
	}
	return s
}

// check says what is wrong with name, a series an expression selects, or
// "" if the scrape has it. A histogram's _bucket, _sum and _count (a
// summary's _sum and _count) belong to the family without the suffix; a
// counter's name ending in _count does not.
func (s scrape) check(name string) string {
	if typ := s.types[name]; typ == "histogram" || typ == "summary" {
		return fmt.Sprintf("%s is a %s: select its _bucket, _sum or _count", name, typ)
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		family, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch typ := s.types[family]; {
		case typ == "histogram", typ == "summary" && suffix != "_bucket":
			if !s.samples[name] {
				return fmt.Sprintf("%s: the %s %s has no such series in the scrape", name, typ, family)
			}
			return ""
		case typ != "":
			return fmt.Sprintf("%s: %s is a %s, it has no %s series", name, family, typ, suffix)
		}
	}
	if !s.samples[name] {
		return name + ": not in the scrape"
	}
	return ""
}

// TestOpsDashboardAndAlertsNameExportedMetrics: every metric the Grafana
// dashboard and the alert rules select is one a node exports. Two nodes
// with upstream on, a cross-node /send and a client's connect event make
// the series that exist only after traffic (the forward and upstream POST
// histograms, the per-peer link counters) appear.
func TestOpsDashboardAndAlertsNameExportedMetrics(t *testing.T) {
	d, dashExprs := dashboardExprs(t)
	if d.SchemaVersion < 36 {
		t.Errorf("%s: schemaVersion %d, want a recent one (36+)", dashboardFile, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" {
		t.Errorf("%s: templating variables %v, want datasource (datasource) and instance (query)", dashboardFile, vars)
	}
	alerts := alertExprs(t)

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(backend.Close)
	nodes := nodetest.StartCluster(t, 2, func(i int, s *nodetest.Setup) {
		s.Cfg.Upstream.URL = backend.URL
		s.Cfg.Upstream.Secret = config.SampleUpstreamSecret
	})
	a, b := nodes[0], nodes[1]
	a.Dial(t, a.Token(t, "local", "web"), testsupport.DialOpts{}) // a connect event: an upstream POST
	remote := b.Dial(t, b.Token(t, "remote", "web"), testsupport.DialOpts{})
	nodetest.WaitRoutable(t, nodes, "remote", "t2")
	if out := a.Send(t, `{"users":["remote"],"data":"x"}`); out["delivered"] != 1.0 {
		t.Fatalf("send across nodes: %v", out)
	}
	remote.Next(t)
	var s scrape
	testsupport.WaitFor(t, "t1's upstream POST and forward histograms", func() bool {
		s = parseScrape(a.Metrics(t))
		return s.samples["wsmesh_upstream_post_seconds_bucket"] && s.samples["wsmesh_relay_forward_seconds_bucket"]
	})

	check := func(kind string, exprs map[string]string) {
		for expr, where := range exprs {
			names := metricIdent.FindAllString(expr, -1)
			if len(names) == 0 && !upOnly.MatchString(expr) {
				t.Errorf("%s %q: %s names no wsmesh_, process_ or go_ metric", kind, where, expr)
			}
			for _, name := range names {
				if msg := s.check(name); msg != "" {
					t.Errorf("%s %q: %s", kind, where, msg)
				}
			}
		}
	}
	check("dashboard panel", dashExprs)
	alertByExpr := map[string]string{}
	for alert, expr := range alerts {
		alertByExpr[expr] = alert
	}
	check("alert", alertByExpr)
}

// TestOpsPromtool: promtool accepts deploy/alerts.yml, its unit tests in
// deploy/alerts_test.yml pass, and every dashboard expression parses as
// PromQL (each checked as a recording rule, Grafana's variables filled in).
func TestOpsPromtool(t *testing.T) {
	promtool := testsupport.RequireTool(t, "promtool", "prometheus")
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(promtool, args...).CombinedOutput()
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
		if err != nil {
			t.Errorf("promtool %s: %v", strings.Join(args, " "), err)
		}
	}
	run("check", "rules", alertsFile)
	if _, err := os.Stat(alertsTestFile); err == nil {
		run("test", "rules", alertsTestFile)
	}

	_, exprs := dashboardExprs(t)
	grafanaVar := regexp.MustCompile(`\$\{?(\w+)\}?`)
	fill := map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "job": "wsmesh", "instance": ".+"}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for _, expr := range slices.Sorted(maps.Keys(exprs)) {
		filled := grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
			name := grafanaVar.FindStringSubmatch(v)[1]
			val, ok := fill[name]
			if !ok {
				t.Errorf("dashboard panel %q: unknown variable %s", exprs[expr], v)
			}
			return val
		})
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:expr%d", len(rules)), Expr: filled})
	}
	// JSON is YAML: promtool reads it as a rule file.
	raw, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	run("check", "rules", file)
}

// TestOpsCleanLogsWhenAPeerLeaves: a node leaving on purpose (as on
// SIGTERM) while the others run, then every node shutting down, logs no
// ERROR line and no hint that cluster.secret_keys may differ: an operator
// grepping for errors after a rolling restart finds nothing.
func TestOpsCleanLogsWhenAPeerLeaves(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave int // index of the node that leaves; t1 is every other node's seed
	}{
		{"seed leaves", 0},
		{"non-seed leaves", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := nodetest.StartCluster(t, 3)
			leaver := nodes[tc.leave]
			stay := slices.Delete(slices.Clone(nodes), tc.leave, tc.leave+1)
			// Each staying node re-joins lost members every 500ms here
			// (rejoinLoop); memberlist logs each try that gets no answer.
			addr := leaver.Cluster().Addr()
			attempts := func(n *nodetest.Node) int { return n.Logs.Count("failed to join " + addr) }
			leaver.Stop(t)
			name := leaver.Cfg.Node.Name
			testsupport.WaitFor(t, name+" left in every staying node's view", func() bool {
				for _, n := range stay {
					if clustertest.StateOf(n.Cluster(), name) != cluster.StateLeft {
						return false
					}
				}
				return true
			})
			before := make([]int, len(stay))
			for i, n := range stay {
				before[i] = attempts(n)
			}
			testsupport.WaitFor(t, "two re-joins of "+name+" by every staying node since it left", func() bool {
				for i, n := range stay {
					if attempts(n) < before[i]+2 {
						return false
					}
				}
				return true
			})
			for _, n := range stay {
				n.BeginStop()
			}
			for _, n := range stay {
				n.Stop(t)
			}
			for _, n := range nodes {
				if c := n.Logs.Count("level=ERROR"); c > 0 {
					t.Errorf("%s logged %d ERROR lines", n.Cfg.Node.Name, c)
				}
				if c := n.Logs.Count("secret_keys"); c > 0 {
					t.Errorf("%s logged %d lines hinting at cluster.secret_keys", n.Cfg.Node.Name, c)
				}
			}
		})
	}
}

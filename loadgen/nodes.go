package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nodeAPI calls the nodes' HTTP API (GET /cluster, /rooms/{room}, /metrics).
type nodeAPI struct {
	client *http.Client
	apiKey string
}

func newNodeAPI(apiKey string) *nodeAPI {
	return &nodeAPI{
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2, DisableCompression: true}},
		apiKey: apiKey,
	}
}

func (a *nodeAPI) close() { a.client.CloseIdleConnections() }

func (a *nodeAPI) get(ctx context.Context, addr, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	if a.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+a.apiKey)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %.200s", path, resp.StatusCode, body)
	}
	return body, nil
}

// clusterInfo is a node's GET /cluster answer.
type clusterInfo struct {
	Node      string `json:"node"`
	TableSize int    `json:"table_size"`
	Members   []struct {
		Name     string `json:"name"`
		State    string `json:"state"`
		Sessions int    `json:"sessions"`
	} `json:"members"`
}

func (a *nodeAPI) cluster(ctx context.Context, addr string) (*clusterInfo, error) {
	body, err := a.get(ctx, addr, "/cluster")
	if err != nil {
		return nil, err
	}
	var c clusterInfo
	if err := json.Unmarshal(body, &c); err != nil || len(c.Members) == 0 {
		return nil, fmt.Errorf("GET /cluster: unexpected answer %.200s", body)
	}
	return &c, nil
}

// alive counts the members the node lists as alive.
func (c *clusterInfo) alive() int {
	n := 0
	for _, m := range c.Members {
		if m.State == "alive" {
			n++
		}
	}
	return n
}

// ownSessions is the number of sessions the node itself holds (it lists
// itself first).
func (c *clusterInfo) ownSessions() int { return c.Members[0].Sessions }

// roomInfo is a node's GET /rooms/{room} answer: the room's members on
// each node, as that node's table counts them.
type roomInfo struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
	Nodes   []struct {
		Node    string `json:"node"`
		Members int    `json:"members"`
	} `json:"nodes"`
}

func (a *nodeAPI) room(ctx context.Context, addr, room string) (*roomInfo, error) {
	body, err := a.get(ctx, addr, "/rooms/"+url.PathEscape(room))
	if err != nil {
		return nil, err
	}
	var ri roomInfo
	if err := json.Unmarshal(body, &ri); err != nil || ri.Room != room {
		return nil, fmt.Errorf("GET /rooms/%s: unexpected answer %.200s", room, body)
	}
	return &ri, nil
}

// membersOn is the room's member count on node.
func (ri *roomInfo) membersOn(node string) int {
	for _, n := range ri.Nodes {
		if n.Node == node {
			return n.Members
		}
	}
	return 0
}

// metricsRSS reads process_resident_memory_bytes from GET /metrics.
func (a *nodeAPI) metricsRSS(ctx context.Context, addr string) (int64, error) {
	v, err := a.metric(ctx, addr, "process_resident_memory_bytes")
	return int64(v), err
}

// metric reads the value of an unlabelled metric from GET /metrics.
func (a *nodeAPI) metric(ctx context.Context, addr, name string) (float64, error) {
	body, err := a.get(ctx, addr, "/metrics")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("GET /metrics: %s %q: %v", name, v, err)
			}
			return f, nil
		}
	}
	return 0, errors.New("GET /metrics: no " + name)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the CPU time (user + system) process pid has used.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...: utime and stime are fields 14 and 15,
	// the 12th and 13th after the comm's closing parenthesis.
	i := strings.LastIndexByte(string(raw), ')')
	f := strings.Fields(string(raw[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// selfCPU returns the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmRSSKiB reads VmRSS from /proc/<pid>/status.
func vmRSSKiB(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

package session

import "syscall"

// FileLimitConnections is the default MaxConnections: the process's open-file
// limit less a reserve for everything that is not a client WebSocket (the
// HTTP API and its keep-alive connections, gossip, links to other nodes,
// log files): a tenth of the limit, at least 128 and at most 10,000 files.
// So a node that is full still answers /healthz, the API and its peers.
func FileLimitConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return connectionsFor(1024)
	}
	return connectionsFor(rl.Cur)
}

func connectionsFor(files uint64) int {
	const maxInt = int(^uint(0) >> 1)
	reserve := min(max(files/10, 128), 10_000)
	if files <= 2*reserve {
		return int(max(files/2, 1))
	}
	return int(min(files-reserve, uint64(maxInt)))
}

//go:build unix

package server

import "syscall"

// fdReserve is what the process keeps of its open-file limit for what is not a client connection:
// the database and its journal, logs, destinations' connections and files.
const fdReserve = 64

// fitOpenFiles lowers a connection cap to what the open-file limit allows: past it, accept fails
// (EMFILE) and new connections wait in the backlog, unanswered, while idle ones hold every
// descriptor; under the cap they wait the same, but idle ones are closed under pressure. It returns
// the cap and the limit (0 when unknown).
func fitOpenFiles(n int) (int, uint64) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<31 { // unlimited, or as good as
		return n, 0
	}
	reserve := min(fdReserve, rl.Cur/2)
	if uint64(n)+reserve > rl.Cur {
		n = max(1, int(rl.Cur-reserve))
	}
	return n, rl.Cur
}

package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RedisServer is a redis-server started by a test on a free loopback
// port, with a temporary directory and no persistence. It is stopped when
// the test ends.
type RedisServer struct {
	Addr string // host:port
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// Redis starts a redis-server for t. Without redis-server on PATH it
// skips t, or fails it when KEYPLANE_REQUIRE_EMULATORS is set (install
// the Debian package redis-server; scripts/install-prereqs.sh does).
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if Required() {
			t.Fatalf("redis-server is not installed but KEYPLANE_REQUIRE_EMULATORS is set: run scripts/install-prereqs.sh")
		}
		t.Skip("redis-server not installed; run scripts/install-prereqs.sh")
	}
	s := &RedisServer{t: t, dir: t.TempDir()}
	var err error
	for range 3 { // another process may take the free port first
		if s.port, err = freePort(); err != nil {
			t.Fatalf("free port: %v", err)
		}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	t.Cleanup(s.Stop)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs redis-server and waits for its "Ready to accept connections"
// log line.
func (s *RedisServer) start() error {
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	ready := make(chan bool, 1)
	done := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			if !seen {
				log.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), "Ready to accept connections") {
					seen = true
					ready <- true
				}
			}
		}
		if !seen {
			ready <- false
		}
		cmd.Wait()
		close(done)
	}()
	select {
	case ok := <-ready:
		if !ok {
			<-done
			return fmt.Errorf("exited before it was ready:\n%s", log.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("not ready after 10 s")
	}
	s.cmd, s.done = cmd, done
	return nil
}

// Stop stops the server (a test's way to make Redis unreachable). It does
// nothing if the server is not running.
func (s *RedisServer) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Start starts a stopped server again on the same address, empty.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restarting redis-server on %s: %v", s.Addr, err)
	}
}

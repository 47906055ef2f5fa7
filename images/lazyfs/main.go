// lazyfs: a FUSE file system over a directory that, when its container is killed, loses every
// write no fsync covered, as a power cut would; and that can fail or slow its writes on
// request. The fault layer under a node's data dir for modematrix's "lose unsynced writes"
// and "I/O errors" faults, in the spirit of Jepsen's LazyFS (see journal.go for how).
//
//	lazyfs run -volume DIR -mount DIR [-uid N -gid N] [-socket FILE] -- COMMAND [ARG...]
//	lazyfs ctl [-socket FILE] eio | slow MS | ok | status
//
// ``run`` undoes what the last crash left unsynced, mounts VOLUME/data at MOUNT, runs COMMAND
// as UID:GID, passes it SIGTERM, SIGINT and SIGHUP, and exits with its code. A COMMAND that
// exits (even one that crashed) keeps every write: only the file system's own end, a kill of
// the container, loses anything. ``ctl`` changes a running lazyfs: ``eio`` fails every write,
// truncate, allocate and fsync with EIO; ``slow MS`` delays each read, write and fsync;
// ``ok`` ends either. Exit codes: 0, 1 (an error), 2 (bad usage), or COMMAND's.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const defaultSocket = "/run/lazyfs.sock"

// faults: what ``ctl`` set; read on every call.
type faults struct {
	eio   atomic.Bool
	delay atomic.Int64 // nanoseconds
}

func (f *faults) before(write bool) syscall.Errno {
	if d := f.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	if write && f.eio.Load() {
		return syscall.EIO
	}
	return 0
}

type lazy struct {
	journal *Journal
	faults  *faults
}

type node struct {
	fs.LoopbackNode
	lazy *lazy
}

func (l *lazy) newNode(root *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
	return &node{LoopbackNode: fs.LoopbackNode{RootData: root}, lazy: l}
}

func (n *node) rel() string { return n.Path(nil) }

func (n *node) backing() string { return filepath.Join(n.RootData.Path, n.rel()) }

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return fs.ToErrno(err)
}

func asError(errno syscall.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

// truncate records the bytes a truncate to ``size`` drops, then runs it.
func (n *node) truncate(fd int, size int64, run func() syscall.Errno) syscall.Errno {
	if errno := n.lazy.faults.before(true); errno != 0 {
		return errno
	}
	return errnoOf(n.lazy.journal.Change(fd, n.backing(), n.rel(), size, math.MaxInt64, func() error { return asError(run()) }))
}

func (n *node) wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &file{LoopbackFile: lf, node: n}
	}
	return fh
}

var _ = (fs.NodeOpener)((*node)(nil))

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		f, err := os.Open(n.backing())
		if err != nil {
			return nil, 0, fs.ToErrno(err)
		}
		defer f.Close()
		var fh fs.FileHandle
		var fuseFlags uint32
		errno := n.truncate(int(f.Fd()), 0, func() (errno syscall.Errno) {
			fh, fuseFlags, errno = n.LoopbackNode.Open(ctx, flags)
			return errno
		})
		if errno != 0 {
			return nil, 0, errno
		}
		return n.wrap(fh), fuseFlags, 0
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.wrap(fh), fuseFlags, 0
}

var _ = (fs.NodeCreater)((*node)(nil))

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	path := filepath.Join(n.RootData.Path, n.rel(), name)
	if f, err := os.Open(path); err == nil && flags&syscall.O_TRUNC != 0 { // an existing file, truncated
		defer f.Close()
		var ch *fs.Inode
		var fh fs.FileHandle
		var fuseFlags uint32
		errno := errnoOf(n.lazy.journal.Change(int(f.Fd()), path, filepath.Join(n.rel(), name), 0, math.MaxInt64, func() error {
			var errno syscall.Errno
			ch, fh, fuseFlags, errno = n.LoopbackNode.Create(ctx, name, flags, mode, out)
			return asError(errno)
		}))
		if errno != 0 {
			return nil, nil, 0, errno
		}
		return ch, ch.Operations().(*node).wrap(fh), fuseFlags, 0
	} else if err == nil {
		f.Close()
	}
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, ch.Operations().(*node).wrap(fh), fuseFlags, 0
}

var _ = (fs.NodeSetattrer)((*node)(nil))

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if ff, ok := f.(*file); ok {
		f = ff.LoopbackFile
	}
	size, ok := in.GetSize()
	if !ok {
		return n.LoopbackNode.Setattr(ctx, f, in, out)
	}
	backing, err := os.Open(n.backing())
	if err != nil {
		return fs.ToErrno(err)
	}
	defer backing.Close()
	return n.truncate(int(backing.Fd()), int64(size), func() syscall.Errno { return n.LoopbackNode.Setattr(ctx, f, in, out) })
}

var _ = (fs.NodeUnlinker)((*node)(nil))

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	r := record{kind: kindUnlink, path: filepath.Join(n.rel(), name)}
	return errnoOf(n.lazy.journal.Note(r, func() error { return asError(n.LoopbackNode.Unlink(ctx, name)) }))
}

var _ = (fs.NodeRenamer)((*node)(nil))

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	r := record{kind: kindRename, path: filepath.Join(n.rel(), name), newPath: filepath.Join(newParent.EmbeddedInode().Path(nil), newName)}
	return errnoOf(n.lazy.journal.Note(r, func() error {
		return asError(n.LoopbackNode.Rename(ctx, name, newParent, newName, flags))
	}))
}

var _ = (fs.NodeCopyFileRanger)((*node)(nil))

// CopyFileRange is refused (callers fall back to read and write, which are recorded).
func (n *node) CopyFileRange(context.Context, fs.FileHandle, uint64, *fs.Inode, fs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

// file: a loopback file whose changes are recorded first. Every other call is the loopback's.
type file struct {
	*fs.LoopbackFile
	node *node
}

func (f *file) fd() int {
	fd, _ := f.LoopbackFile.PassthroughFd()
	return fd
}

// PassthroughFd: none, so that every write reaches lazyfs (the kernel's FUSE passthrough
// would write to the backing file directly).
func (f *file) PassthroughFd() (int, bool) { return -1, false }

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.node.lazy.faults.before(false)
	return f.LoopbackFile.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.node.lazy.faults.before(true); errno != 0 {
		return 0, errno
	}
	var written uint32
	err := f.node.lazy.journal.Change(f.fd(), f.node.backing(), f.node.rel(), off, off+int64(len(data)), func() error {
		var errno syscall.Errno
		written, errno = f.LoopbackFile.Write(ctx, data, off)
		return asError(errno)
	})
	return written, errnoOf(err)
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	var joined []byte
	for _, d := range data {
		joined = append(joined, d...)
	}
	return f.Write(ctx, joined, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.node.lazy.faults.before(true); errno != 0 {
		return errno
	}
	r := record{kind: kindSync, path: f.node.rel()}
	return errnoOf(f.node.lazy.journal.Note(r, func() error { return asError(f.LoopbackFile.Fsync(ctx, flags)) }))
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.node.Setattr(ctx, f, in, out)
}

const (
	punchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	zeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
)

func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if errno := f.node.lazy.faults.before(true); errno != 0 {
		return errno
	}
	end := int64(off) // plain allocation changes no byte below the size: record the size only
	if mode&(punchHole|zeroRange) != 0 {
		end = int64(off + size)
	}
	return errnoOf(f.node.lazy.journal.Change(f.fd(), f.node.backing(), f.node.rel(), int64(off), end, func() error {
		return asError(f.LoopbackFile.Allocate(ctx, off, size, mode))
	}))
}

func usage(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lazyfs: "+format+"\n", args...)
	os.Exit(2)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lazyfs: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		usage("expected `run` or `ctl` (see the top of images/lazyfs/main.go)")
	}
	switch os.Args[1] {
	case "run":
		run(os.Args[2:])
	case "ctl":
		ctl(os.Args[2:])
	default:
		usage("unknown command %q: expected `run` or `ctl`", os.Args[1])
	}
}

func run(args []string) {
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	volume := flags.String("volume", "", "the directory holding data/ (the files) and journal")
	mount := flags.String("mount", "", "where the files appear")
	uid := flags.Int("uid", -1, "run COMMAND as this user, who owns data/")
	gid := flags.Int("gid", -1, "and this group")
	socket := flags.String("socket", defaultSocket, "where `lazyfs ctl` finds this one")
	if err := flags.Parse(args); err != nil {
		os.Exit(2)
	}
	command := flags.Args()
	if *volume == "" || *mount == "" || len(command) == 0 {
		usage("run needs -volume, -mount and a command after --")
	}
	backing := filepath.Join(*volume, "data")
	journalPath := filepath.Join(*volume, "journal")
	if err := os.MkdirAll(backing, 0o700); err != nil {
		fail("%v", err)
	}
	if *uid >= 0 {
		if err := os.Chown(backing, *uid, *gid); err != nil {
			fail("%v", err)
		}
	}
	undone, kept, err := Undo(backing, journalPath)
	if err != nil {
		fail("%v", err)
	}
	fmt.Fprintf(os.Stderr, "lazyfs: undid %d unsynced changes of the last crash (%d were synced)\n", undone, kept)
	journal, err := OpenJournal(journalPath)
	if err != nil {
		fail("%v", err)
	}
	l := &lazy{journal: journal, faults: &faults{}}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		fail("%v", err)
	}
	root := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	root.NewNode = l.newNode
	root.RootNode = l.newNode(root, nil, "", &st)
	server, err := fs.Mount(*mount, root.RootNode, &fs.Options{MountOptions: fuse.MountOptions{
		AllowOther: true, DirectMount: true, DirectMountStrict: true,
		FsName: backing, Name: "lazyfs", Options: []string{"default_permissions"},
	}})
	if err != nil {
		fail("mounting %s: %v", *mount, err)
	}
	listener, err := listen(*socket, l.faults)
	if err != nil {
		server.Unmount()
		fail("%v", err)
	}
	closeOnExec() // the /dev/fuse fd above all: a child holding it would keep a dead mount alive
	child := exec.Command(command[0], command[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	if *uid >= 0 {
		child.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(*uid), Gid: uint32(*gid)}}
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := child.Start(); err != nil {
		server.Unmount()
		fail("starting %s: %v", command[0], err)
	}
	go func() {
		for s := range signals {
			child.Process.Signal(s)
		}
	}()
	err = child.Wait()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
		if code < 0 {
			code = 128 + int(exit.Sys().(syscall.WaitStatus).Signal())
		}
	}
	// The command's end, crashed or not, is not the file system's: nothing is lost.
	listener.Close()
	journal.Forget()
	if err := server.Unmount(); err != nil {
		syscall.Unmount(*mount, syscall.MNT_DETACH) // a grandchild still holds a file
	}
	os.Exit(code)
}

// closeOnExec marks every open fd but stdin, stdout and stderr close-on-exec. go-fuse opens
// /dev/fuse without it: a child that inherited the fd keeps the connection open after lazyfs
// is killed, and then waits forever (state D) on a request nobody will answer.
func closeOnExec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fail("%v", err)
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

func listen(path string, f *faults) (net.Listener, error) {
	os.Remove(path)
	listener, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(conn).ReadString('\n')
			fmt.Fprintln(conn, apply(f, strings.Fields(line)))
			conn.Close()
		}
	}()
	return listener, nil
}

// apply carries out one ``ctl`` request and says what is in force now.
func apply(f *faults, words []string) string {
	switch {
	case len(words) == 1 && words[0] == "eio":
		f.eio.Store(true)
	case len(words) == 2 && words[0] == "slow":
		ms, err := strconv.Atoi(words[1])
		if err != nil || ms < 0 || ms > 10000 {
			return "error: slow needs milliseconds from 0 to 10000"
		}
		f.delay.Store(int64(ms) * int64(time.Millisecond))
	case len(words) == 1 && words[0] == "ok":
		f.eio.Store(false)
		f.delay.Store(0)
	case len(words) == 1 && words[0] == "status":
	default:
		return fmt.Sprintf("error: unknown request %q: expected eio, slow MS, ok or status", strings.Join(words, " "))
	}
	return fmt.Sprintf("eio=%t slow_ms=%d", f.eio.Load(), f.delay.Load()/int64(time.Millisecond))
}

func ctl(args []string) {
	flags := flag.NewFlagSet("ctl", flag.ContinueOnError)
	socket := flags.String("socket", defaultSocket, "the running lazyfs's socket")
	if err := flags.Parse(args); err != nil {
		os.Exit(2)
	}
	if flags.NArg() == 0 {
		usage("ctl needs a request: eio, slow MS, ok or status")
	}
	conn, err := net.DialTimeout("unix", *socket, 5*time.Second)
	if err != nil {
		fail("no lazyfs answers at %s: %v", *socket, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(conn, strings.Join(flags.Args(), " "))
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fail("%v", err)
	}
	reply = strings.TrimSpace(reply)
	fmt.Println(reply)
	if strings.HasPrefix(reply, "error:") {
		os.Exit(2)
	}
}

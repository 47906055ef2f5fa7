package main

// The undo journal: what makes a crash lose exactly the writes no fsync covered.
//
// Every change to a file's data goes to the backing directory at once (so reads, sizes and
// mmap are those of an ordinary file system), after a record of what it overwrote is
// appended to the journal: the file's size before, and the bytes the change replaced. An
// fsync or fdatasync of a file appends a sync record. At the next start, before anything is
// mounted, the journal is undone from its end back to its start, skipping every change a
// later sync of its file covered: each file is left as its last fsync saw it, as after a
// power cut. Renames and unlinks are recorded so that a change follows its file.
//
// Metadata is durable at once (create, mkdir, rename, unlink need no fsync of the directory):
// a gentler crash than a real one, and the one LazyFS models by default.
//
// The journal is an ordinary file on the backing file system, written (not synced) before
// each change: the host does not crash, only the container, so the kernel keeps both.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

const (
	kindUndo   = 'W' // a write, truncate or allocate: the size before and the bytes replaced
	kindSync   = 'S' // fsync or fdatasync: the file's changes so far are durable
	kindRename = 'R'
	kindUnlink = 'U'
)

type record struct {
	kind    byte
	path    string // relative to the backing directory
	newPath string // a rename's target
	size    int64  // undo: the file's size before the change
	offset  int64  // undo: where the replaced bytes start
	data    []byte // undo: the bytes replaced (only those below the old size), but
	zeros   int64  // the zero bytes that followed them, counted, not kept (a preallocated tail)
}

func (r record) encode() []byte {
	out := []byte{r.kind}
	out = binary.LittleEndian.AppendUint32(out, uint32(len(r.path)))
	out = append(out, r.path...)
	switch r.kind {
	case kindRename:
		out = binary.LittleEndian.AppendUint32(out, uint32(len(r.newPath)))
		out = append(out, r.newPath...)
	case kindUndo:
		out = binary.LittleEndian.AppendUint64(out, uint64(r.size))
		out = binary.LittleEndian.AppendUint64(out, uint64(r.offset))
		out = binary.LittleEndian.AppendUint64(out, uint64(r.zeros))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(r.data)))
		out = append(out, r.data...)
	}
	return out
}

func readString(in *bufio.Reader) (string, error) {
	var n uint32
	if err := binary.Read(in, binary.LittleEndian, &n); err != nil {
		return "", err
	}
	b := make([]byte, n)
	_, err := io.ReadFull(in, b)
	return string(b), err
}

func decode(in *bufio.Reader) (record, error) {
	kind, err := in.ReadByte()
	if err != nil {
		return record{}, err
	}
	r := record{kind: kind}
	if r.path, err = readString(in); err != nil {
		return r, err
	}
	switch kind {
	case kindSync, kindUnlink:
	case kindRename:
		r.newPath, err = readString(in)
	case kindUndo:
		var head struct {
			Size, Offset, Zeros int64
			Len                 uint32
		}
		if err = binary.Read(in, binary.LittleEndian, &head); err == nil {
			r.size, r.offset, r.zeros, r.data = head.Size, head.Offset, head.Zeros, make([]byte, head.Len)
			_, err = io.ReadFull(in, r.data)
		}
	default:
		err = fmt.Errorf("unknown record kind %q", kind)
	}
	return r, err
}

const (
	page      = 4096     // a file's content is kept once per page between two of its syncs
	compactAt = 64 << 20 // journal bytes past which the records of synced files are dropped
)

// dirty: a file changed since its last sync, under its current name.
type dirty struct {
	saved map[int64]bool // pages whose content at the last sync the journal holds
	dead  bool           // synced (or unlinked) since: its records are no longer needed
}

// entry: where a record is in the journal, and the file it undoes (nil: a rename or unlink,
// kept through compaction since later records' names depend on it; a sync record's owner
// is its file, dead from the start).
type entry struct {
	at, n int64
	owner *dirty
}

// Journal appends records; one lock orders each record with the change it describes. It
// keeps a page's content once between two syncs of its file (undoing in reverse order, the
// first copy is the one that counts), and drops the records of synced files once the journal
// passes compactAt: its size is bounded by the files' unsynced pages, however long a run.
type Journal struct {
	mu      sync.Mutex
	path    string
	file    *os.File
	size    int64
	files   map[string]*dirty
	entries []entry
}

func OpenJournal(path string) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Journal{path: path, file: f, size: st.Size(), files: map[string]*dirty{}}, nil
}

func (j *Journal) append(r record, owner *dirty) error {
	data := r.encode()
	if _, err := j.file.Write(data); err != nil {
		return err
	}
	j.entries = append(j.entries, entry{j.size, int64(len(data)), owner})
	j.size += int64(len(data))
	return nil
}

// Change records what ``change`` will replace in ``fd`` (the bytes from ``offset`` to
// ``end``, and the size), then makes it, with no other record or change in between. ``fd``
// may be open for writing only (etcd's WAL): the bytes are then read through ``backing``,
// the file's path. Pages already kept since the file's last sync are not kept again.
func (j *Journal) Change(fd int, backing, path string, offset, end int64, change func() error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	d := j.files[path]
	first := d == nil
	if first {
		d = &dirty{saved: map[int64]bool{}}
		j.files[path] = d
	}
	var records []record
	stop := min(end, st.Size) // the bytes below the size that the change replaces
	for p := offset / page; p*page < stop; {
		if d.saved[p] {
			p++
			continue
		}
		run := p // a run of pages not kept yet: one record, each page whole
		for run*page < stop && !d.saved[run] {
			d.saved[run] = true
			run++
		}
		from, to := p*page, min(run*page, st.Size)
		r := record{kind: kindUndo, path: path, size: st.Size, offset: from}
		var err error
		if r.data, r.zeros, err = replaced(fd, from, to); errors.Is(err, syscall.EBADF) {
			f, err := os.Open(backing)
			if err != nil {
				return err
			}
			r.data, r.zeros, err = replaced(int(f.Fd()), from, to)
			f.Close()
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		records = append(records, r)
		p = run
	}
	if first && len(records) == 0 { // the size at the last sync, which undoing ends with
		records = append(records, record{kind: kindUndo, path: path, size: st.Size, offset: offset})
	}
	for _, r := range records {
		if err := j.append(r, d); err != nil {
			return err
		}
	}
	if err := change(); err != nil {
		return err
	}
	return j.compact()
}

// Note appends a sync, rename or unlink record, after ``done`` succeeds and under the lock.
func (j *Journal) Note(r record, done func() error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := done(); err != nil {
		return err
	}
	var owner *dirty
	switch r.kind {
	case kindSync:
		owner = &dirty{dead: true}
		j.forget(r.path)
	case kindUnlink:
		j.forget(r.path)
	case kindRename:
		j.forget(r.newPath) // the file it replaces is gone
		if d := j.files[r.path]; d != nil {
			delete(j.files, r.path)
			j.files[r.newPath] = d
		}
	}
	return j.append(r, owner)
}

func (j *Journal) forget(path string) {
	if d := j.files[path]; d != nil {
		d.dead = true
		delete(j.files, path)
	}
}

// compact rewrites the journal without the records of synced and unlinked files once it is
// past compactAt and they are most of it; the new journal replaces the old by a rename.
func (j *Journal) compact() error {
	if j.size < compactAt {
		return nil
	}
	var live int64
	for _, e := range j.entries {
		if e.owner == nil || !e.owner.dead {
			live += e.n
		}
	}
	if live > j.size/2 {
		return nil
	}
	old, err := os.Open(j.path)
	if err != nil {
		return err
	}
	defer old.Close()
	tmp := j.path + ".compact"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	var kept []entry
	var size int64
	for _, e := range j.entries {
		if e.owner != nil && e.owner.dead {
			continue
		}
		data := make([]byte, e.n)
		if _, err := old.ReadAt(data, e.at); err == nil {
			_, err = out.Write(data)
		}
		if err != nil {
			out.Close()
			os.Remove(tmp)
			return err
		}
		kept = append(kept, entry{size, e.n, e.owner})
		size += e.n
	}
	if err := os.Rename(tmp, j.path); err != nil {
		out.Close()
		return err
	}
	j.file.Close()
	j.file, j.size, j.entries = out, size, kept
	return nil
}

// Forget empties the journal: everything written so far is kept (a clean stop, where the
// kernel would have written the page cache back).
func (j *Journal) Forget() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.files, j.entries, j.size = map[string]*dirty{}, nil, 0
	return j.file.Truncate(0)
}

func (j *Journal) Close() error { return j.file.Close() }

// Size is the journal's length in bytes (for tests: it stays bounded).
func (j *Journal) Size() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}

// Undo replays the journal at ``path`` backwards over ``root``: every change that no later
// sync of its file covered is undone. It returns how many changes it undid and kept, and
// empties the journal. A record cut short (the container was killed while appending it) is
// dropped: its change had not started.
func Undo(root, path string) (undone, kept int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	var records []record
	in := bufio.NewReader(f)
	for {
		r, err := decode(in)
		if err != nil {
			break // io.EOF, or a record cut short
		}
		records = append(records, r)
	}
	f.Close()
	// Going backwards, ``now`` maps a name as it was at that point to the file's name at the
	// end ("" once the file is gone), so a change follows its file through renames.
	now := map[string]string{}
	name := func(p string) string {
		if n, ok := now[p]; ok {
			return n
		}
		return p
	}
	synced := map[string]bool{}
	for i := len(records) - 1; i >= 0; i-- {
		r := records[i]
		switch r.kind {
		case kindUnlink:
			now[r.path] = ""
		case kindRename:
			now[r.path], now[r.newPath] = name(r.newPath), ""
		case kindSync:
			if n := name(r.path); n != "" {
				synced[n] = true
			}
		case kindUndo:
			n := name(r.path)
			if n == "" || synced[n] {
				kept++
				continue
			}
			if err := undo(filepath.Join(root, n), r); err != nil && !errors.Is(err, os.ErrNotExist) {
				return undone, kept, fmt.Errorf("undoing a change of %s: %w", n, err)
			}
			undone++
		}
	}
	return undone, kept, os.Truncate(path, 0)
}

const chunk = 1 << 20

// replaced reads the bytes from ``offset`` to ``stop`` a MiB at a time, keeping them up to the
// last non-zero one and counting the zeros after it: truncating etcd's 64 MB preallocated WAL
// segment to its length would otherwise hold 64 MB of zeros in memory and in the journal.
func replaced(fd int, offset, stop int64) (data []byte, zeros int64, err error) {
	buf := make([]byte, chunk)
	for at := offset; at < stop; {
		n := int(min(int64(chunk), stop-at))
		if _, err := preadFull(fd, buf[:n], at); err != nil {
			return nil, 0, err
		}
		last := n - 1
		for last >= 0 && buf[last] == 0 {
			last--
		}
		if last >= 0 { // non-zero bytes: the zeros before them are kept as bytes
			data = append(data, make([]byte, zeros)...)
			data = append(data, buf[:last+1]...)
			zeros = int64(n - last - 1)
		} else {
			zeros += int64(n)
		}
		at += int64(n)
	}
	return data, zeros, nil
}

func preadFull(fd int, buf []byte, offset int64) (int, error) {
	done := 0
	for done < len(buf) {
		n, err := syscall.Pread(fd, buf[done:], offset+int64(done))
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.ErrUnexpectedEOF
		}
		done += n
	}
	return done, nil
}

func undo(path string, r record) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if len(r.data) > 0 {
		if _, err := f.WriteAt(r.data, r.offset); err != nil {
			return err
		}
	}
	zero := make([]byte, min(r.zeros, chunk))
	for at, left := r.offset+int64(len(r.data)), r.zeros; left > 0; {
		n := min(left, int64(len(zero)))
		if _, err := f.WriteAt(zero[:n], at); err != nil {
			return err
		}
		at, left = at+n, left-n
	}
	return f.Truncate(r.size)
}

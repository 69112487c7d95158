package secretkey

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// FileName is the name of the key file LoadOrCreate keeps in its directory.
const FileName = "keygate-secret.key"

// readRetry bounds how long LoadOrCreate waits for a file another process is still writing
// (only possible where hard links are unsupported and the O_EXCL fallback is used).
const readRetry = 2 * time.Second

// LoadOrCreate returns the key stored in dir/keygate-secret.key, creating the file with a new
// random key (hex, mode 0600) when it does not exist; created reports which happened.
//
// Creation is atomic: the key is written to a temporary file and hard-linked into place, which
// fails if the file exists, so processes starting together all end up with the one key that won.
// A key file whose permissions are more open than 0600 is refused, as is one that does not hold
// a hex key of at least MinLen bytes. Errors name the file, never its content.
func LoadOrCreate(dir string) (k Key, created bool, err error) {
	path := filepath.Join(dir, FileName)
	k, err = load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	k = Generate()
	won, err := create(dir, path, k)
	if err != nil {
		return Key{}, false, err
	}
	if won {
		return k, true, nil
	}
	k, err = load(path)
	return k, false, err
}

// load reads the key file, waiting briefly for one that is still empty (a concurrent creator
// between its O_EXCL create and its write).
func load(path string) (Key, error) {
	deadline := time.Now().Add(readRetry)
	for {
		k, empty, err := loadOnce(path)
		if !empty || time.Now().After(deadline) {
			return k, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func loadOnce(path string) (k Key, empty bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return Key{}, false, fmt.Errorf("secret key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Key{}, false, fmt.Errorf("secret key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Key{}, false, fmt.Errorf("secret key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 && runtime.GOOS != "windows" {
		return Key{}, false, fmt.Errorf("secret key file %s has mode %04o, more open than 0600; run chmod 600 on it", path, perm)
	}
	buf, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return Key{}, false, fmt.Errorf("secret key file: %w", err)
	}
	text := strings.TrimSpace(string(buf))
	if text == "" {
		return Key{}, true, fmt.Errorf("secret key file %s is empty", path)
	}
	k, err = Parse(text)
	if err != nil {
		return Key{}, false, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return k, false, nil
}

// create writes k to path unless the file exists; won reports whether k is now the stored key.
func create(dir, path string, k Key) (won bool, err error) {
	tmp, err := os.CreateTemp(dir, "."+FileName+".tmp-*") // O_EXCL, mode 0600
	if err != nil {
		return false, fmt.Errorf("secret key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeClose(tmp, k); err != nil {
		return false, err
	}
	err = os.Link(tmp.Name(), path)
	switch {
	case err == nil:
		syncDir(dir)
		return true, nil
	case errors.Is(err, fs.ErrExist):
		return false, nil
	}
	// The file system has no hard links: create the file itself with O_EXCL. A concurrent
	// reader may briefly see it empty; load waits for that.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("secret key file: %w", err)
	}
	if err := writeClose(f, k); err != nil {
		return false, err
	}
	syncDir(dir)
	return true, nil
}

func writeClose(f *os.File, k Key) error {
	_, err := f.WriteString(k.hexText())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("secret key file: %w", err)
	}
	return nil
}

// syncDir makes a new directory entry durable; failure only weakens crash safety.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

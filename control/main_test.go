package control_test

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// TestMain raises the default of -parallel: the suite's subtests spend most of their time
// waiting for PostgreSQL (creating, migrating and dropping a database each), not on a CPU, so
// running only GOMAXPROCS of them at once makes the package slow on small machines. An explicit
// -parallel flag still wins.
func TestMain(m *testing.M) {
	_ = flag.Set("test.parallel", strconv.Itoa(max(8, runtime.GOMAXPROCS(0))))
	os.Exit(m.Run())
}

package check_test

import (
	"testing"

	"github.com/pendinglink/pendinglink/store/storetest"
)

// TestMain drops the PostgreSQL template database the tests made.
func TestMain(m *testing.M) { storetest.Main(m) }

package syncbuf_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/internal/syncbuf"
)

func TestBuffer(t *testing.T) {
	t.Parallel()

	t.Run("ConcurrentWritesAllKept", func(t *testing.T) {
		t.Parallel()
		var b syncbuf.Buffer
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				_, _ = fmt.Fprintf(&b, "line %d\n", i)
				_ = b.String() // races with the writers under -race
			})
		}
		wg.Wait()
		require.Len(t, strings.Split(strings.TrimSpace(b.String()), "\n"), 50)
	})

	t.Run("TailReturnsLastLines", func(t *testing.T) {
		t.Parallel()
		var b syncbuf.Buffer
		_, _ = b.Write([]byte("a\nb\nc\n"))
		require.Equal(t, "b\nc", b.Tail(2))
		require.Equal(t, "a\nb\nc", b.Tail(10), "fewer lines than asked: all of them")
	})

	t.Run("TailOfEmptyIsEmpty", func(t *testing.T) {
		t.Parallel()
		var b syncbuf.Buffer
		require.Empty(t, b.Tail(3))
	})
}

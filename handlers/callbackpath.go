package handlers

import (
	"errors"
	"strings"
)

// CheckCallbackPath reports whether path can be the callback route without
// taking a path of the server's own, which echo would then give to
// whichever of the two was mounted last (WeCom's URL check would get the
// login page, or a fan's lookup the callback). New checks it too; serve
// calls it while reading the configuration, to name the variable. The
// error does not repeat path.
func CheckCallbackPath(path string) error {
	if !strings.HasPrefix(path, "/") {
		return errors.New("must start with /")
	}
	for _, r := range path {
		// echo reads ':' and '*' as a parameter and a wildcard ("/*" would
		// answer every unknown path), and it routes on the escaped path, so
		// a path with '%' or a byte that needs escaping would never match.
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(":*%?#", r) {
			return errors.New("must be printable ASCII without spaces, ':', '*', '%', '?' or '#'")
		}
	}
	switch path {
	case "/", "/healthz", "/readyz", "/metrics":
		return errors.New("is a route of the server (/, /healthz, /readyz, /metrics); choose another path")
	}
	for _, tree := range []string{"/v1", "/ui", JobsUIPrefix} {
		if path == tree || strings.HasPrefix(path, tree+"/") {
			return errors.New("is under one of the server's own paths (/v1, /ui, " + JobsUIPrefix + "); choose another path")
		}
	}
	return nil
}

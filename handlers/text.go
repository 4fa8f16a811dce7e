package handlers

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// plainText is the /v1 group's check of the text it is sent: every query
// and path parameter must be UTF-8 without NUL (PostgreSQL refuses
// anything else, and an error there would answer 500), and path parameters
// are unescaped, as echo routes on the escaped path: a fan "a/b" is
// /v1/fans/a%2Fb.
func plainText(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		for name, values := range c.QueryParams() {
			for _, v := range values {
				if !isPlainText(v) {
					return badRequest("query parameter " + name + ": not UTF-8 text, or holds NUL")
				}
			}
		}
		values := c.ParamValues()
		for i, name := range c.ParamNames() {
			if i >= len(values) {
				break
			}
			v, err := url.PathUnescape(values[i])
			if err != nil || !isPlainText(v) {
				return badRequest("path parameter " + name + ": not UTF-8 text, or holds NUL")
			}
			values[i] = v
		}
		c.SetParamValues(values...)
		return next(c)
	}
}

func isPlainText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// jsonNUL is how a JSON string holds NUL: encoding/json turns bytes that
// are not UTF-8 into U+FFFD, but keeps NUL, which PostgreSQL refuses.
var jsonNUL = []byte(`\u0000`)

// checkJSONText answers 400 for a JSON body holding NUL in a string.
func checkJSONText(raw []byte) error {
	if bytes.Contains(raw, jsonNUL) {
		return echo.NewHTTPError(http.StatusBadRequest, `invalid JSON body: strings must not hold NUL (\u0000)`)
	}
	return nil
}

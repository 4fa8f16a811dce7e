package handlers

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// checkText answers 400 naming name unless v is UTF-8 without NUL: the
// store's text columns take nothing else (PostgreSQL refuses it with an
// error that would be a 500), and no id or reason holds such bytes.
func checkText(name, v string) error {
	if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
		return badRequest(name + ": must be UTF-8 text without NUL")
	}
	return nil
}

// textParams is the /v1 group's check of its query and path parameters
// (checkText). Path parameters are unescaped first when echo routed on the
// escaped path, which it does whenever the request has one (a fan "a/b"
// is /v1/fans/a%2Fb); otherwise they are unescaped already, and unescaping
// them again would turn a fan "a%2Fb" into "a/b".
func textParams(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		for name, values := range c.QueryParams() {
			for _, v := range values {
				if err := checkText(name, v); err != nil {
					return err
				}
			}
		}
		names, values := c.ParamNames(), slices.Clone(c.ParamValues())
		escaped := c.Request().URL.RawPath != ""
		for i, v := range values {
			if escaped {
				u, err := url.PathUnescape(v)
				if err != nil {
					return badRequest(names[i] + ": not a valid escaped path segment")
				}
				values[i] = u
			}
			if err := checkText(names[i], values[i]); err != nil {
				return err
			}
		}
		c.SetParamValues(values...)
		return next(c)
	}
}

// checkJSONText applies checkText to every string decoded into v, naming
// it by its JSON path (reason, [3].unionid). encoding/json replaces bytes
// that are not UTF-8, but keeps the NUL of \u0000.
func checkJSONText(v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return checkJSONText(v.Elem(), path)
	case reflect.String:
		return checkText(path, v.String())
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := checkJSONText(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			k := fmt.Sprint(it.Key().Interface())
			if err := checkText(joinPath(path, "(key)"), k); err != nil {
				return err
			}
			if err := checkJSONText(it.Value(), joinPath(path, k)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case !f.IsExported() || name == "-":
				continue
			case f.Anonymous && name == "":
				name = path // an embedded struct's fields are its parent's
			case name == "":
				name = joinPath(path, f.Name)
			default:
				name = joinPath(path, name)
			}
			if err := checkJSONText(v.Field(i), name); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

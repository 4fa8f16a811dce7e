// Package openapitest holds HTTP traffic to pendinglink's OpenAPI document
// (apiclient/openapi.json): a Validator of requests and answers, and an
// http.RoundTripper that applies it to everything a test's client sends.
// Only tests import it.
package openapitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/pendinglink/pendinglink/apiclient"
)

// Validator checks requests and answers against the document. It is safe
// for concurrent use.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
	// mounted are the path prefixes the document leaves to other projects
	// (its x-mounted list): nothing under them is checked.
	mounted []string
}

// New loads the document apiclient embeds, requires it to be valid OpenAPI,
// and closes its objects (see closeObjects).
func New(ctx context.Context) (*Validator, error) {
	doc, err := openapi3.NewLoader().LoadFromData(apiclient.OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("openapitest: load the document: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("openapitest: the document is not valid OpenAPI: %w", err)
	}
	closeObjects(doc)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("openapitest: route the document: %w", err)
	}
	v := &Validator{doc: doc, router: router}
	if list, ok := doc.Extensions["x-mounted"].([]any); ok {
		for _, m := range list {
			if p, ok := m.(map[string]any)["prefix"].(string); ok && p != "" {
				v.mounted = append(v.mounted, p)
			}
		}
	}
	return v, nil
}

// MustNew is New that fails tb.
func MustNew(tb testing.TB) *Validator {
	tb.Helper()
	v, err := New(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// closeObjects forbids keys the document does not list in every object
// schema that lists its keys and says nothing of others. The document
// leaves answers open, because later versions add keys (clients must
// ignore new ones); the tests hold the server to exactly the documented
// keys, so a key added without documenting it fails them. Request bodies
// are closed in the document itself: the server refuses unknown fields.
func closeObjects(doc *openapi3.T) {
	seen := map[*openapi3.Schema]bool{}
	var walk func(*openapi3.SchemaRef)
	walk = func(ref *openapi3.SchemaRef) {
		if ref == nil || ref.Value == nil || seen[ref.Value] {
			return
		}
		s := ref.Value
		seen[s] = true
		if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
			closed := false
			s.AdditionalProperties.Has = &closed
		}
		for _, p := range s.Properties {
			walk(p)
		}
		walk(s.Items)
		walk(s.AdditionalProperties.Schema)
		for _, refs := range []openapi3.SchemaRefs{s.AllOf, s.AnyOf, s.OneOf} {
			for _, r := range refs {
				walk(r)
			}
		}
	}
	for _, s := range doc.Components.Schemas {
		walk(s)
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, r := range op.Responses.Map() {
				for _, mt := range r.Value.Content {
					walk(mt.Schema)
				}
			}
		}
	}
}

// Operations maps "METHOD /path" of every operation in the document to its
// operationId.
func (v *Validator) Operations() map[string]string {
	ops := map[string]string{}
	for path, item := range v.doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops[method+" "+path] = op.OperationID
		}
	}
	return ops
}

// CheckRequest validates a request whose body is body and returns the
// operationId it reaches.
func (v *Validator) CheckRequest(ctx context.Context, req *http.Request, body []byte) (string, error) {
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if err := openapi3filter.ValidateRequest(ctx, requestInput(ctx, req, body, route, params)); err != nil {
		return route.Operation.OperationID, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	return route.Operation.OperationID, nil
}

// Check validates one exchange: a request whose body is reqBody, answered
// status with header and respBody. The answer must be one the document
// lists for the request's operation. A request the document calls invalid
// must be refused with a 4xx (401 without the bearer token or the session
// cookie), and a route it lacks with a 4xx in the Error shape.
func (v *Validator) Check(ctx context.Context, req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) error {
	what := req.Method + " " + req.URL.Path
	for _, p := range v.mounted {
		if strings.HasPrefix(req.URL.Path, p) {
			return nil
		}
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		if status/100 != 4 {
			return fmt.Errorf("%s is not in the document (%w) but was answered %d", what, err, status)
		}
		if err := v.checkError(ctx, header, respBody); err != nil {
			return fmt.Errorf("%s is not in the document and its %d answer is not the Error shape: %w", what, status, err)
		}
		return nil
	}
	in := requestInput(ctx, req, reqBody, route, params)
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: status, Header: header, Body: io.NopCloser(bytes.NewReader(respBody)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%s answered %d, which the document does not allow: %w", what, status, err)
	}
	var noToken *openapi3filter.SecurityRequirementsError
	switch {
	case reqErr == nil:
		return nil
	case errors.As(reqErr, &noToken) && status != http.StatusUnauthorized:
		return fmt.Errorf("%s without a bearer token or session cookie was answered %d, not 401", what, status)
	case status/100 != 4:
		return fmt.Errorf("%s was answered %d, but the document calls the request invalid: %w", what, status, reqErr)
	}
	return nil
}

// checkError requires a JSON body of the Error schema.
func (v *Validator) checkError(ctx context.Context, header http.Header, body []byte) error {
	mt, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return fmt.Errorf("Content-Type %q is not application/json", header.Get("Content-Type"))
	}
	value, err := openapi3filter.JSONBodyDecoder(bytes.NewReader(body), header, nil, nil)
	if err != nil {
		return err
	}
	return v.doc.Components.Schemas["Error"].Value.VisitJSON(value, openapi3.EnableJSONSchema2020())
}

// requestInput is the validation input of req with its body. The callback's
// XML body is checked by its signature, not by a schema, so a body the
// document does not give as JSON is not validated.
func requestInput(ctx context.Context, req *http.Request, body []byte, route *routers.Route, params map[string]string) *openapi3filter.RequestValidationInput {
	r := req.Clone(ctx) // validation sets defaults in it
	r.Body = io.NopCloser(bytes.NewReader(body))
	opts := &openapi3filter.Options{AuthenticationFunc: credentialPresent}
	if rb := route.Operation.RequestBody; rb != nil && rb.Value.Content.Get("application/json") == nil {
		opts.ExcludeRequestBody = true
	}
	return &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}
}

// credentialPresent checks that a request carries the credential of a
// security scheme: a bearer token, or a cookie (the status page's session);
// whether it is the right one is the server's to say (401).
func credentialPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s, r := in.SecurityScheme, in.RequestValidationInput.Request
	switch {
	case s != nil && s.Type == "http" && s.Scheme == "bearer":
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			return errors.New("no bearer token")
		}
		return nil
	case s != nil && s.Type == "apiKey" && s.In == "cookie":
		if c, err := r.Cookie(s.Name); err != nil || c.Value == "" {
			return fmt.Errorf("no %s cookie", s.Name)
		}
		return nil
	}
	return fmt.Errorf("security scheme %s is neither an HTTP bearer token nor a cookie", in.SecuritySchemeName)
}

// Transport returns an http.RoundTripper that sends through base
// (http.DefaultTransport when nil) and checks every exchange with Check. It
// changes nothing its client sees. Each mismatch fails tb when tb's test
// ends: a RoundTripper runs on any goroutine, and may serve subtests.
func (v *Validator) Transport(tb testing.TB, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	t := &transport{v: v, base: base}
	tb.Cleanup(func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		for i, err := range t.mismatches {
			if i == maxReported {
				tb.Errorf("openapitest: and %d more mismatches", len(t.mismatches)-maxReported)
				break
			}
			tb.Errorf("openapitest: %v", err)
		}
	})
	return t
}

// maxReported bounds the mismatches a test prints: one bad schema can fail
// every answer of a polling test.
const maxReported = 10

type transport struct {
	v    *Validator
	base http.RoundTripper

	mu         sync.Mutex
	mismatches []error
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("openapitest: read the request body: %w", err)
		}
		reqBody = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err // no answer to check
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		// A cut answer (a killed server): hand it on as it came, unchecked.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(respBody), errReader{err}))
		return resp, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if err := t.v.Check(req.Context(), req, reqBody, resp.StatusCode, resp.Header, respBody); err != nil {
		t.mu.Lock()
		t.mismatches = append(t.mismatches, err)
		t.mu.Unlock()
	}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach base.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

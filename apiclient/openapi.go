package apiclient

import _ "embed"

// openAPIDocument is openapi.json, embedded so that the document a server
// serves is the file in the repository.
//
//go:embed openapi.json
var openAPIDocument string

// OpenAPI returns the OpenAPI 3.1 document of the HTTP API (the /v1 routes,
// the callback URL, health and metrics, and the status page's routes), as
// served at GET /v1/openapi.json.
// Each call returns a fresh copy.
func OpenAPI() []byte { return []byte(openAPIDocument) }

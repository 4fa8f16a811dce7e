package handlers

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/pendinglink/pendinglink/apiclient"
)

// OpenAPIPath serves the API's OpenAPI document. It is outside the admin
// token's group: the document describes the API and holds nothing secret,
// so tools can fetch it without the token.
const OpenAPIPath = "/v1/openapi.json"

// openAPI answers the document embedded in apiclient, the repository's file.
func openAPI() echo.HandlerFunc {
	doc := apiclient.OpenAPI()
	return func(c echo.Context) error { return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, doc) }
}

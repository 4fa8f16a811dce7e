package wecomtest_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// The fake must never be the bottleneck of a benchmark that uses it; these
// measure its cost per call over real loopback HTTP.

func BenchmarkServer_ExternalUserIDToPendingID(b *testing.B) {
	srv := wecomtest.NewServer(wecomtest.WithPendingForUnregistered(true)) // every id answered
	defer srv.Close()
	tok := benchToken(b, srv)
	d := srv.AddDealer("A")
	ids := make([]string, 100)
	for i := range ids {
		p := srv.AddPerson()
		ids[i] = srv.AddCustomer(d, p, d.Staff[0]).ExternalUserID
	}
	q := url.Values{"access_token": {tok}}
	body := map[string]any{"external_userid": ids}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := trySend(srv, http.MethodPost, wecomtest.APIExternalUserIDToPendingID, q, body)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func BenchmarkServer_UnionIDToPendingID(b *testing.B) {
	srv := wecomtest.NewServer(wecomtest.WithQuotas(wecomtest.Quota{Hour: -1, Day: -1, Month: -1}, wecomtest.Quota{}))
	defer srv.Close()
	tok := benchToken(b, srv)
	p := srv.AddPerson()
	q := url.Values{"access_token": {tok}}
	body := map[string]string{"unionid": p.UnionID, "openid": p.OpenID}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := trySend(srv, http.MethodPost, wecomtest.APIUnionIDToPendingID, q, body)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func BenchmarkSender_Send(b *testing.B) {
	srv := wecomtest.NewServer()
	defer srv.Close()
	rc := newReceiverB(b)
	d := srv.AddDealer("A")
	ev := srv.ContactEvent(srv.AddCustomer(d, srv.AddPerson(), d.Staff[0]), wecom.ChangeAddExternalContact)
	sd := srv.Sender(rc, cbToken, cbKey)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sd.Send(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

func benchToken(b *testing.B, srv *wecomtest.Server) string {
	b.Helper()
	resp, err := trySend(srv, http.MethodGet, wecomtest.APIGetToken, url.Values{"corpid": {srv.CorpID}, "corpsecret": {srv.CorpSecret}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var r tokenResp
	if err := decodeJSON(resp, &r); err != nil || r.AccessToken == "" {
		b.Fatalf("gettoken: %v %+v", err, r)
	}
	return r.AccessToken
}

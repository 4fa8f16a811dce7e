package wecomtest

import (
	"github.com/pendinglink/pendinglink/wecom"
)

// ClientConfig returns a wecom.Config for this fake: its URL, upstream corp,
// agent and secret, HTTPClient, Now = Clock.Now, and Sleep = Clock.Sleep so
// that retry backoff moves the fake clock instead of waiting. Change what
// the test needs (limiters, PendingToken) and pass it to wecom.NewClient.
// It panics if the server is not started.
func (s *Server) ClientConfig() wecom.Config {
	s.mustStarted("ClientConfig")
	return wecom.Config{
		BaseURL:    s.URL,
		CorpID:     s.CorpID,
		AgentID:    s.AgentID,
		CorpSecret: s.CorpSecret,
		HTTPClient: s.ts.Client(),
		Now:        s.Clock.Now,
		Sleep:      s.Clock.Sleep,
	}
}

// Client returns a ready *wecom.Client for this fake, built from
// ClientConfig. Close closes it. It panics if the server is not started.
func (s *Server) Client() *wecom.Client {
	c, err := wecom.NewClient(s.ClientConfig())
	if err != nil {
		panic("wecomtest: " + err.Error())
	}
	s.closeMu.Lock()
	s.clients = append(s.clients, c)
	s.closeMu.Unlock()
	return c
}

package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/pendinglink/pendinglink/wecom"
)

// probeExternalUserID is the id the pending_id permission check looks up:
// no corp has it, so the lookup finds nothing and changes nothing.
const probeExternalUserID = "wmpendinglink-check-probe"

// checkWeCom reports the corp id and secret, the shared app, the trusted
// IP and the pending_id permission, from at most four calls: gettoken,
// list_app_share_info, batch/external_userid_to_pending_id (and, with a
// downstream token, corpgroup/corp/gettoken).
func checkWeCom(ctx context.Context, cfg Config) []Line {
	wc := cfg.WeCom
	wc.Logger = slog.New(slog.DiscardHandler)
	if wc.Now == nil {
		wc.Now = cfg.Now
	}
	// A check reports; it does not wait out an outage.
	if wc.Retry.MaxAttempts == 0 {
		wc.Retry = wecom.RetryPolicy{MaxAttempts: 2, MaxDelay: time.Second}
	}
	app := fmt.Sprintf("[AgentId %d]", wc.AgentID)
	client, err := wecom.NewClient(wc)
	if err != nil {
		return []Line{{Fail, LineSecret, err.Error(), "set WECOM_CORP_ID, WECOM_AGENT_ID and WECOM_CORP_SECRET"}}
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	notChecked := Line{Mark: Skip, Text: "not checked: needs an access token (see corp id and secret)"}
	tokenErr := client.CheckToken(ctx)
	secret := secretLine(tokenErr, wc, app)
	if tokenErr != nil {
		share, pending := notChecked, notChecked
		share.Name, pending.Name = LineSharedApp, LinePendingID
		ip := trustedIPLine(app, false, tokenErr)
		if ip.Mark == Skip {
			ip.Text = notChecked.Text
		}
		return []Line{secret, share, ip, pending}
	}
	shares, shareErr := client.ListAppShareInfo(ctx)
	share := sharedAppLine(shares, shareErr, app)
	pending, pendingErr := pendingLine(ctx, client, wc, shares, shareErr, app)
	// Any WeCom answer past gettoken proves the IP; a 60020 disproves it.
	answered := isAnswer(shareErr) || isAnswer(pendingErr)
	return []Line{secret, share, trustedIPLine(app, answered, shareErr, pendingErr), pending}
}

// errNotCalled stands for a call the check did not make.
var errNotCalled = errors.New("not called")

// isAnswer reports whether err is WeCom's answer (success or an errcode)
// rather than no answer at all.
func isAnswer(err error) bool {
	var ae *wecom.APIError
	return err == nil || errors.As(err, &ae)
}

func ipRefused(err error) bool {
	var ae *wecom.APIError
	return errors.As(err, &ae) && ae.Code == wecom.CodeIPNotAllowed
}

// errcode describes an answer that is neither success nor a known fault.
func errcode(err error) string {
	var ae *wecom.APIError
	if errors.As(err, &ae) {
		return fmt.Sprintf("%s answered errcode %d (%s)", ae.API, ae.Code, ae.Msg)
	}
	return fmt.Sprintf("no answer from WeCom: %v", err)
}

// unreachable is the fix when WeCom gave no answer at all.
const unreachable = "allow outbound HTTPS from this machine to qyapi.weixin.qq.com (or point WECOM_API_BASE at your egress proxy)"

func secretLine(err error, wc wecom.Config, app string) Line {
	var ae *wecom.APIError
	switch {
	case err == nil:
		return Line{Pass, LineSecret, fmt.Sprintf("WeCom accepted corp id %s and WECOM_CORP_SECRET (gettoken)", wc.CorpID), ""}
	case ipRefused(err):
		return Line{Skip, LineSecret, "not checked: WeCom refused this machine's IP (see trusted IP)", ""}
	case !errors.As(err, &ae):
		return Line{Fail, LineSecret, errcode(err), unreachable}
	case ae.Code == 40013:
		return Line{Fail, LineSecret, fmt.Sprintf("WeCom does not know corp id %s (40013)", wc.CorpID),
			"我的企业 → 企业信息 → 企业ID / My Company → Company Information → Corp ID: copy it into WECOM_CORP_ID"}
	case ae.Code == wecom.CodeInvalidSecret || ae.Code == 40091:
		return Line{Fail, LineSecret, fmt.Sprintf("WeCom refused WECOM_CORP_SECRET for corp %s (%d)", wc.CorpID, ae.Code),
			fmt.Sprintf("应用管理 → %s → Secret → 查看 / App Management → %s → Secret → View: the secret (sent to the admin's WeCom) of the shared self-built app, not another app's or 通讯录同步's, into WECOM_CORP_SECRET", app, app)}
	}
	return Line{Fail, LineSecret, errcode(err), "see the reference's error codes"}
}

// shareFix is where an app is shared with the dealers.
func shareFix(app string) string {
	return fmt.Sprintf("上下游 → 共享应用 → 添加共享应用 %s and pick the dealers / Upstream & Downstream → Shared Apps → Add %s: share it with every dealer; each dealer's admin confirms the share and grants 「企业客户」", app, app)
}

func sharedAppLine(shares []wecom.SharedCorp, err error, app string) Line {
	var ae *wecom.APIError
	switch {
	case err == nil && len(shares) == 0:
		return Line{Fail, LineSharedApp, fmt.Sprintf("app %s is shared with no dealer (list_app_share_info is empty)", app), shareFix(app)}
	case err == nil:
		names := make([]string, 0, min(len(shares), 5))
		for _, s := range shares[:min(len(shares), 5)] {
			names = append(names, fmt.Sprintf("%s (%s)", s.CorpName, s.CorpID))
		}
		more := ""
		if len(shares) > 5 {
			more = fmt.Sprintf(" and %d more", len(shares)-5)
		}
		return Line{Pass, LineSharedApp, fmt.Sprintf("app %s is shared with %d dealers: %s%s", app, len(shares), strings.Join(names, ", "), more), ""}
	case ipRefused(err):
		return Line{Skip, LineSharedApp, "not checked: WeCom refused this machine's IP (see trusted IP)", ""}
	case !errors.As(err, &ae):
		return Line{Fail, LineSharedApp, errcode(err), unreachable}
	case ae.Code == wecom.CodeAppNotShared:
		return Line{Fail, LineSharedApp, fmt.Sprintf("app %s is not in any share scope (670001)", app), shareFix(app)}
	case ae.Code == wecom.CodeNoAppPermission:
		return Line{Fail, LineSharedApp, fmt.Sprintf("WECOM_AGENT_ID %s is not the app of WECOM_CORP_SECRET (301002)", strings.Trim(app, "[]")),
			"应用管理 → the shared app → AgentId / App Management → the shared app → AgentId: copy it into WECOM_AGENT_ID, and its Secret into WECOM_CORP_SECRET"}
	case ae.Code == wecom.CodeNoPermission:
		return Line{Fail, LineSharedApp, fmt.Sprintf("app %s may not call the 上下游 APIs (48002)", app), shareFix(app)}
	}
	return Line{Fail, LineSharedApp, errcode(err), "see the reference's error codes"}
}

func trustedIPLine(app string, answered bool, errs ...error) Line {
	for _, err := range errs {
		if !ipRefused(err) {
			continue
		}
		fix := fmt.Sprintf("应用管理 → %s → 企业可信IP → 配置 / App Management → %s → Trusted IPs → Configure: add ", app, app)
		if ip, ok := wecom.EgressIP(err); ok {
			return Line{Fail, LineTrustedIP, fmt.Sprintf("WeCom refused calls from %s (60020)", ip),
				fix + ip.String() + " (a trusted domain or the callback URL must be set first)"}
		}
		return Line{Fail, LineTrustedIP, "WeCom refused calls from this machine's IP (60020; its errmsg names no IP)",
			fix + "this machine's egress IP (a trusted domain or the callback URL must be set first)"}
	}
	if answered {
		return Line{Pass, LineTrustedIP, "WeCom answered calls from this machine's IP (run check where serve runs: it is that IP that counts)", ""}
	}
	return Line{Skip, LineTrustedIP, "not checked: no API call got an answer (see above)", ""}
}

// pendingLine looks up a made-up external_userid with
// batch/external_userid_to_pending_id, the API every add waits for, with
// the token serve uses (WECOM_PENDING_TOKEN). It spends none of the
// unionid_to_pending_id quota: this API has no quota of its own, only
// WeCom's general per-API limits, of which it spends one call. It returns
// the call's error, errNotCalled if it made none.
func pendingLine(ctx context.Context, client *wecom.Client, wc wecom.Config, shares []wecom.SharedCorp, shareErr error, app string) (Line, error) {
	corp := ""
	if wc.PendingToken == wecom.PendingTokenDownstream {
		if shareErr != nil || len(shares) == 0 {
			return Line{Skip, LinePendingID, "not checked: WECOM_PENDING_TOKEN=downstream needs a dealer that shares the app (see shared app)", ""}, errNotCalled
		}
		corp = shares[0].CorpID
	}
	_, err := client.ExternalUserIDToPendingID(ctx, corp, "", []string{probeExternalUserID})
	token := "the upstream token"
	if corp != "" {
		token = "dealer " + corp + "'s token"
	}
	var ae *wecom.APIError
	switch {
	case err == nil, errors.As(err, &ae) && (ae.Code == wecom.CodeInvalidExternalUserID || ae.Code == wecom.CodeInvalidParameter || ae.Code == wecom.CodeNotCustomerYet):
		// An answer about the id itself: the permission checks passed.
		return Line{Pass, LinePendingID, fmt.Sprintf("batch/external_userid_to_pending_id answered a made-up id with %s (no unionid_to_pending_id quota spent)", token), ""}, err
	case ipRefused(err):
		return Line{Skip, LinePendingID, "not checked: WeCom refused this machine's IP (see trusted IP)", ""}, err
	case !errors.As(err, &ae):
		return Line{Fail, LinePendingID, errcode(err), unreachable}, err
	}
	if text, fix := pendingFault(ae.Code, app); text != "" {
		return Line{Fail, LinePendingID, fmt.Sprintf("%s (%d, with %s)", text, ae.Code, token), fix}, err
	}
	return Line{Fail, LinePendingID, errcode(err), "see the reference's error codes"}, err
}

// pendingFault explains the answers that say the app or the corps are not
// set up for pending_ids (doc 43378's 权限说明).
func pendingFault(code int, app string) (text, fix string) {
	switch code {
	case wecom.CodeNoPermission:
		return fmt.Sprintf("app %s may not call the pending_id APIs", app),
			fmt.Sprintf("客户联系 → API → 可调用接口的应用 → 添加 %s / Customer Contact → API → Apps that can call the API → Add %s; and each dealer's admin grants the shared app 「企业客户」", app, app)
	case wecom.CodeNoAppPermission:
		return "the token belongs to another app",
			"check WECOM_AGENT_ID and WECOM_CORP_SECRET (the shared app's), and try WECOM_PENDING_TOKEN=upstream"
	case 610014:
		return "WeCom refused the unionid", "the fans' unionid and openid must come from the same mini-program or 服务号"
	case 610015:
		return "the Open Platform account (unionid) is not verified",
			"open.weixin.qq.com → 账号中心 → 开发者资质认证 / Open Platform → Account Center → Developer Verification"
	case 610016:
		return "the corp is not verified",
			"我的企业 → 企业信息 → 企业认证 / My Company → Company Information → Verify (the brand's corp and every dealer's)"
	case 610017:
		return "the Open Platform account and the mini-program or 服务号 are not verified under the corp's entity name",
			"verify both under the same entity name as 我的企业 → 企业信息 → 企业主体 / My Company → Company Information → Legal Entity"
	}
	return "", ""
}

func humanCount(n int64) string { return humanize.Comma(n) }

func humanBytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

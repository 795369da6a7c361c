package benchmark

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
)

// Orgs are the organizations the stored data set is spread over, with their share of events.
var Orgs = []struct {
	ID    string
	Share float64
}{
	{"org_01BENCHACME", 0.40},
	{"org_01BENCHGLOBEX", 0.25},
	{"org_01BENCHINITECH", 0.15},
	{"org_01BENCHUMBRELLA", 0.12},
	{"org_01BENCHHOOLI", 0.08},
}

// Actions, most frequent first; an event's action is drawn from a Zipf distribution over them.
var Actions = []string{
	"user.signed_in", "document.viewed", "user.signed_out", "document.updated", "api_key.used",
	"document.created", "user.login_failed", "team.member_added", "document.shared", "project.created",
	"settings.updated", "role.assigned", "invoice.created", "document.deleted", "user.password_changed",
	"team.member_removed", "invoice.paid", "webhook.created", "user.mfa_enabled", "export.requested",
	"project.archived", "role.revoked", "api_key.created", "subscription.updated", "integration.connected",
	"sso.connection_updated", "api_key.revoked", "webhook.deleted", "integration.disconnected", "org.renamed",
}

var (
	firstNames = []string{"Jon", "Ada", "Grace", "Linus", "Maria", "Wei", "Amara", "Sofia", "Kenji", "Olga",
		"Priya", "Diego", "Fatima", "Lars", "Chen", "Noor", "Tomasz", "Aiko", "Kwame", "Elena"}
	lastNames = []string{"Smith", "Lovelace", "Hopper", "Okafor", "Nakamura", "Kowalski", "Haddad", "Johansson",
		"Fernandes", "Ivanova", "Mbeki", "Rossi", "Tanaka", "Schmidt", "Garcia", "Nguyen", "Dubois", "Kaur",
		"Petrov", "Moreau", "Yilmaz", "Andersen", "Castillo", "Osei", "Larsen"}
	userAgents = []string{
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
		"workos-node/11.0.0/node/22.4.0",
	}
	targetTypes = map[string]string{"user": "user", "document": "document", "api_key": "api_key", "team": "team",
		"project": "project", "settings": "workspace", "role": "role", "invoice": "invoice", "webhook": "webhook",
		"export": "export", "subscription": "subscription", "integration": "integration", "sso": "connection", "org": "organization"}
	plans   = []string{"free", "starter", "pro", "enterprise"}
	regions = []string{"us-east-1", "eu-west-1", "ap-southeast-2"}
)

// ActorsPerOrg is how many distinct users each organization has; who acts is Zipf-distributed.
const ActorsPerOrg = 5000

// Gen generates realistic WorkOS audit events deterministically: event i of a data set of n
// events is always the same, so ceilings and Logbook see the same rows. Its occurred_at times
// run in order over Span ending at End (a year replayed in order, with a little jitter).
type Gen struct {
	End  time.Time
	Span time.Duration
	N    int64 // events in the data set (spreads occurred_at over Span)
	Seed uint64
}

// Ev is one generated event: the organization it belongs to and the WorkOS event.
type Ev struct {
	Org   string
	Event event.Event
}

// zipf draws 0..n-1 with P(k) ∝ 1/(k+1)^s; inverse CDF over a precomputed table.
type zipf struct{ cdf []float64 }

func newZipf(n int, s float64) *zipf {
	z := &zipf{cdf: make([]float64, n)}
	sum := 0.0
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		z.cdf[k] = sum
	}
	for k := range z.cdf {
		z.cdf[k] /= sum
	}
	return z
}

func (z *zipf) draw(r *rand.Rand) int {
	u := r.Float64()
	lo, hi := 0, len(z.cdf)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if z.cdf[mid] < u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

var (
	actionZipf = newZipf(len(Actions), 1.1)
	actorZipf  = newZipf(ActorsPerOrg, 0.9)
)

// OrgOf picks the organization of event i by the shares in Orgs.
func OrgOf(r *rand.Rand) string {
	u := r.Float64()
	for _, o := range Orgs {
		if u < o.Share {
			return o.ID
		}
		u -= o.Share
	}
	return Orgs[0].ID
}

// ActorID is the id of an organization's k-th user.
func ActorID(org string, k int) string {
	return fmt.Sprintf("user_01H%s%05d", org[len(org)-4:], k)
}

// ActorName is the display name of user k (names repeat across organizations, as they do).
func ActorName(k int) string {
	return firstNames[k%len(firstNames)] + " " + lastNames[(k/len(firstNames))%len(lastNames)]
}

// At returns event i of the data set.
func (g *Gen) At(i int64) Ev {
	r := rand.New(rand.NewPCG(g.Seed, uint64(i)))
	org := OrgOf(r)
	action := Actions[actionZipf.draw(r)]
	frac := float64(i) / float64(max(g.N, 1))
	at := g.End.Add(-g.Span).Add(time.Duration(frac * float64(g.Span))).Add(time.Duration(r.IntN(60_000)) * time.Millisecond)
	if at.After(g.End) {
		at = g.End
	}
	at = at.Truncate(time.Millisecond)
	k := actorZipf.draw(r)
	actor := event.Entity{ID: ActorID(org, k), Type: "user", Name: ActorName(k)}
	if r.IntN(20) == 0 {
		actor = event.Entity{ID: fmt.Sprintf("key_01HBENCH%06d", r.IntN(200)), Type: "api_key", Name: "CI deploy key"}
	}
	prefix := action[:indexByte(action, '.')]
	targets := []event.Entity{{ID: fmt.Sprintf("%s_01H%08d", targetTypes[prefix], r.IntN(100_000)), Type: targetTypes[prefix]}}
	if r.IntN(3) == 0 {
		targets = append(targets, event.Entity{ID: fmt.Sprintf("team_01H%05d", r.IntN(500)), Type: "team", Name: "Team " + lastNames[r.IntN(len(lastNames))]})
	}
	return Ev{Org: org, Event: event.Event{
		Action:     action,
		OccurredAt: at,
		Actor:      actor,
		Targets:    targets,
		Context: event.Context{
			Location:  fmt.Sprintf("%d.%d.%d.%d", 1+r.IntN(223), r.IntN(256), r.IntN(256), 1+r.IntN(254)),
			UserAgent: userAgents[r.IntN(len(userAgents))],
		},
		Metadata: map[string]any{
			"request_id": fmt.Sprintf("req_%016x", r.Uint64()),
			"session_id": fmt.Sprintf("sess_%012x", r.Uint64()>>16),
			"path":       fmt.Sprintf("/api/v1/%ss/%s_01H%08d", prefix, prefix, r.IntN(100_000)),
			"plan":       plans[r.IntN(len(plans))],
			"region":     regions[r.IntN(len(regions))],
			"attempts":   json.Number(strconv.Itoa(1 + r.IntN(3))),
			"mfa":        r.IntN(2) == 0,
		},
	}}
}

func indexByte(s string, c byte) int {
	for i := range len(s) {
		if s[i] == c {
			return i
		}
	}
	return len(s)
}

// body is the WorkOS create-event request body; with Key set, a bulk line with its own key.
type body struct {
	OrganizationID string       `json:"organization_id"`
	Event          *event.Event `json:"event"`
	Key            string       `json:"idempotency_key,omitempty"`
}

// Body is the JSON of a create-event request (POST /audit_logs/events) for e, about 600 bytes.
func (e *Ev) Body() []byte {
	b, err := json.Marshal(body{OrganizationID: e.Org, Event: &e.Event})
	if err != nil {
		panic(err) // generated values always encode
	}
	return b
}

// Record is the record the gateway would publish for e, with the given id and receive time.
func (e *Ev) Record(id string, received time.Time) *event.Record {
	return &event.Record{ID: id, OrganizationID: e.Org, ReceivedAt: received.UTC().Truncate(time.Millisecond), Event: e.Event}
}

// ULIDLike is a 26-character Crockford base32 id, unique per (t, n) like the gateway's ULIDs.
func ULIDLike(t time.Time, n uint64) string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var b [26]byte
	ms := uint64(t.UnixMilli())
	for i := 9; i >= 0; i-- {
		b[i] = alphabet[ms&31]
		ms >>= 5
	}
	for i := 25; i >= 10; i-- {
		b[i] = alphabet[n&31]
		n >>= 5
	}
	return string(b[:])
}

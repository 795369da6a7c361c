package event

import (
	"math/rand/v2"
	"regexp"
	"testing"
)

// The hand-written checks accept exactly what their regular expressions (kept here as the
// specification) accept.
func TestWordChecksMatchTheirPatterns(t *testing.T) {
	orgID := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	word40 := regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)
	dotted := regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	alphabet := []string{"a", "Z", "0", "9", "_", "-", ".", " ", "*", ">", "é", "\x00", "\n", "/", "`", "{", "@", "[", ":"}
	cases := []string{"", ".", "a.", ".a", "a..b", "a.b", "user.signed_in", "org_01H", "a b", "é", "a\n",
		string(make([]byte, 64)), "x" + string(make([]byte, 0))}
	for _, n := range []int{39, 40, 41, 63, 64, 65} {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a'
		}
		cases = append(cases, string(b))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		n := r.IntN(8)
		s := ""
		for range n {
			s += alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, s)
	}
	for _, s := range cases {
		if got, want := ValidOrgID(s), orgID.MatchString(s); got != want {
			t.Fatalf("ValidOrgID(%q) = %v, pattern says %v", s, got, want)
		}
		if got, want := IsWord(s, 40), word40.MatchString(s); got != want {
			t.Fatalf("IsWord(%q, 40) = %v, pattern says %v", s, got, want)
		}
		if got, want := IsDottedWords(s), dotted.MatchString(s); got != want {
			t.Fatalf("IsDottedWords(%q) = %v, pattern says %v", s, got, want)
		}
	}
}

func BenchmarkValidOrgID(b *testing.B) {
	for b.Loop() {
		ValidOrgID("org_01HBENCHACME0000000000000")
	}
}

package schema_test

import (
	"fmt"
	"strings"
)

// realisticSchemas are schemas of the kind producers register: what the SDKs send, and richer
// hand-written ones (shared $defs, patterns, enums, conditionals, closed objects).
func realisticSchemas() map[string]string {
	rich := `{"type":"object","additionalProperties":false,"required":["request_id","outcome"],
	  "$defs":{
	    "id":{"type":"string","pattern":"^[a-z]+_[0-9A-HJKMNP-TV-Z]{26}$","maxLength":64},
	    "uuid":{"type":"string","pattern":"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
	    "email":{"type":"string","format":"email","pattern":"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$","maxLength":254},
	    "money":{"type":"number","minimum":0,"maximum":1000000000,"multipleOf":0.01}},
	  "properties":{
	    "request_id":{"$ref":"#/$defs/uuid"},
	    "session_id":{"$ref":"#/$defs/uuid"},
	    "user_id":{"$ref":"#/$defs/id"},
	    "team_id":{"$ref":"#/$defs/id"},
	    "invoice_id":{"$ref":"#/$defs/id"},
	    "email":{"$ref":"#/$defs/email"},
	    "previous_email":{"$ref":"#/$defs/email"},
	    "amount":{"$ref":"#/$defs/money"},
	    "refund":{"$ref":"#/$defs/money"},
	    "currency":{"enum":["USD","EUR","GBP","JPY","CAD","AUD","CHF","SEK","NOK","DKK"]},
	    "outcome":{"enum":["success","failure","denied","error"]},
	    "reason":{"type":"string","minLength":1,"maxLength":500},
	    "ip":{"type":"string","format":"ipv4","pattern":"^(\\d{1,3}\\.){3}\\d{1,3}$"},
	    "attempts":{"type":"integer","minimum":0,"maximum":100},
	    "mfa":{"type":"boolean"},
	    "role":{"enum":["owner","admin","member","viewer","billing"]},
	    "plan":{"type":"string","enum":["free","team","business","enterprise"]},
	    "seats":{"type":"integer","exclusiveMinimum":0},
	    "region":{"type":"string","pattern":"^[a-z]{2}-[a-z]+-[0-9]$"},
	    "occurred_from":{"type":"string","format":"date-time"}},
	  "patternProperties":{"^x_[a-z_]{1,38}$":{"type":["string","number","boolean"],"maxLength":200}},
	  "propertyNames":{"maxLength":40},
	  "dependentRequired":{"refund":["amount","currency"]},
	  "if":{"properties":{"outcome":{"const":"failure"}},"required":["outcome"]},
	  "then":{"required":["reason"]},
	  "minProperties":1,"maxProperties":50}`
	var targets []string
	for _, typ := range []string{"user", "team", "invoice", "api_key", "sso_connection", "directory", "document", "project", "webhook", "role"} {
		targets = append(targets, fmt.Sprintf(`{"type":%q,"metadata":%s}`, typ, rich))
	}
	return map[string]string{
		"node SDK": `{"actor":{"metadata":{"type":"object","properties":{"role":{"type":"string"}}}},
		  "targets":[{"type":"team","metadata":{"type":"object","properties":{"plan":{"type":"string"}}}}],
		  "metadata":{"type":"object","properties":{"attempts":{"type":"number"}}}}`,
		"fifty typed keys everywhere": func() string {
			var props []string
			for i := range 50 {
				props = append(props, fmt.Sprintf(`"k%d":{"type":"string","maxLength":100,"pattern":"^[A-Za-z0-9 _.-]*$"}`, i))
			}
			s := `{"type":"object","additionalProperties":false,"properties":{` + strings.Join(props, ",") + `}}`
			return `{"actor":{"metadata":` + s + `},"targets":[{"type":"t","metadata":` + s + `}],"metadata":` + s + `}`
		}(),
		"rich, ten target types": `{"actor":{"metadata":` + rich + `},"targets":[` + strings.Join(targets, ",") + `],"metadata":` + rich + `}`,
	}
}

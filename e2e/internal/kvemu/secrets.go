package kvemu

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

func (s *Server) secretJSON(c *ctx, v *version, withValue bool) map[string]any {
	out := map[string]any{
		"id":         c.base + "/secrets/" + c.name + "/" + v.id,
		"attributes": v.attributesJSON(),
		"tags":       tagsOrEmpty(v.tags),
	}
	if withValue {
		out["value"] = v.value
	}
	if v.contentType != "" {
		out["contentType"] = v.contentType
	}
	if v.managed {
		out["managed"] = true
		out["kid"] = c.base + "/keys/" + v.keyID
	}
	return out
}

func (s *Server) secrets(c *ctx, rest []string) {
	o := c.vault.secrets[c.name]
	m := c.r.Method
	switch {
	case m == http.MethodPut && len(rest) == 0:
		var body struct {
			Value       *string           `json:"value"`
			ContentType string            `json:"contentType"`
			Attributes  *attributes       `json:"attributes"`
			Tags        map[string]string `json:"tags"`
		}
		if !c.decode(&body) {
			return
		}
		if body.Value == nil {
			c.fail(400, "BadParameter", "Property value is required.", "")
			return
		}
		if o != nil && o.latest().managed {
			c.fail(403, "Forbidden", "Secret "+c.name+" is managed by a certificate and cannot be set directly.", "")
			return
		}
		now := s.now()
		v := &version{id: newVersionID(), created: now, updated: now, enabled: true, value: *body.Value, contentType: body.ContentType, tags: body.Tags}
		v.apply(body.Attributes)
		if o == nil {
			o = &object{}
			c.vault.secrets[c.name] = o
		}
		o.versions = append(o.versions, v)
		c.json(200, s.secretJSON(c, v, true))
	case m == http.MethodDelete && len(rest) == 0:
		if o == nil {
			notFound(c, "secret")
			return
		}
		delete(c.vault.secrets, c.name)
		out := s.secretJSON(c, o.latest(), false)
		out["recoveryId"] = c.base + "/deletedsecrets/" + c.name
		out["deletedDate"] = s.now()
		c.json(200, out)
	case m == http.MethodGet && len(rest) == 1 && rest[0] == "versions":
		if o == nil {
			notFound(c, "secret")
			return
		}
		s.listVersions(c, "secrets", o, func(v *version) map[string]any { return s.secretJSON(c, v, false) })
	case m == http.MethodGet && len(rest) <= 1:
		v := pick(c, o, rest, "secret")
		if v == nil {
			return
		}
		if !v.enabled {
			c.fixture(403, "secret-disabled", nil)
			return
		}
		c.json(200, s.secretJSON(c, v, true))
	case m == http.MethodPatch && len(rest) <= 1:
		v := pick(c, o, rest, "secret")
		if v == nil {
			return
		}
		var body struct {
			ContentType *string           `json:"contentType"`
			Attributes  *attributes       `json:"attributes"`
			Tags        map[string]string `json:"tags"`
		}
		if !c.decode(&body) {
			return
		}
		v.apply(body.Attributes)
		if body.ContentType != nil {
			v.contentType = *body.ContentType
		}
		if body.Tags != nil {
			v.tags = body.Tags
		}
		v.updated = s.now()
		c.json(200, s.secretJSON(c, v, false))
	default:
		c.fail(405, "MethodNotAllowed", m+" is not supported on "+c.r.URL.Path, "")
	}
}

// listSecrets answers GET /secrets: one item per secret (its latest version's attributes, tags,
// contentType and managed flag, an id without version, never the value), ordered by name, paged
// like version lists ($skiptoken, maxresults up to 25, nextLink).
func (s *Server) listSecrets(c *ctx) {
	page := s.opts.PageSize
	q := c.r.URL.Query()
	if m := q.Get("maxresults"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 25 {
			c.fail(400, "BadParameter", "Invalid maxresults: it must be an integer between 1 and 25.", "")
			return
		}
		page = min(page, n)
	}
	skip := 0
	if t := q.Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			c.fail(400, "BadParameter", "Invalid $skiptoken.", "")
			return
		}
		skip = n
	}
	var names []string
	for name, o := range c.vault.secrets {
		if len(o.versions) > 0 {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	value := []map[string]any{}
	for i := skip; i < len(names) && i < skip+page; i++ {
		name := names[i]
		sc := *c
		sc.name = name
		item := s.secretJSON(&sc, c.vault.secrets[name].latest(), false)
		item["id"] = c.base + "/secrets/" + name
		value = append(value, item)
	}
	var next any
	if skip+page < len(names) {
		link := fmt.Sprintf("%s/secrets?api-version=%s&$skiptoken=%d", c.base, q.Get("api-version"), skip+page)
		if m := q.Get("maxresults"); m != "" {
			link += "&maxresults=" + m
		}
		next = link
	}
	c.json(200, map[string]any{"value": value, "nextLink": next})
}

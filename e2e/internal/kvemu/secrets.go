package kvemu

import "net/http"

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
			notFound(c, "secret", "SecretNotFound")
			return
		}
		delete(c.vault.secrets, c.name)
		out := s.secretJSON(c, o.latest(), false)
		out["recoveryId"] = c.base + "/deletedsecrets/" + c.name
		out["deletedDate"] = s.now()
		c.json(200, out)
	case m == http.MethodGet && len(rest) == 1 && rest[0] == "versions":
		if o == nil {
			notFound(c, "secret", "SecretNotFound")
			return
		}
		s.listVersions(c, "secrets", o, func(v *version) map[string]any { return s.secretJSON(c, v, false) })
	case m == http.MethodGet && len(rest) <= 1:
		id := ""
		if len(rest) == 1 {
			id = rest[0]
		}
		v := pick(c, o, id, "secret", "SecretNotFound")
		if v == nil {
			return
		}
		if !v.enabled {
			c.fail(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
			return
		}
		c.json(200, s.secretJSON(c, v, true))
	case m == http.MethodPatch && len(rest) <= 1:
		id := ""
		if len(rest) == 1 {
			id = rest[0]
		}
		v := pick(c, o, id, "secret", "SecretNotFound")
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

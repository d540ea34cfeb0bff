package httpapi

import "net/http"

// webhookRequest is the body of PUT /v1/owners/{owner}/webhook.
type webhookRequest struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
}

// putWebhook sets an owner's notification webhook. The response carries
// the new signing secret, the only time it is shown; every call rotates it.
func (s *Server) putWebhook(w http.ResponseWriter, r *http.Request, _ string) error {
	var req webhookRequest
	if err := decode(w, r, ManagementBodyLimit, &req, false); err != nil {
		return err
	}
	wh, secret, err := s.Notify.SetWebhook(r.Context(), r.PathValue("owner"), req.URL, req.Events)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, webhookSecretResource{URL: wh.URL, Events: wh.Events, Secret: secret})
	return nil
}

// getWebhook reads an owner's webhook back, without its secret.
func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request, _ string) error {
	wh, err := s.Notify.Webhook(r.Context(), r.PathValue("owner"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, webhookResource{URL: wh.URL, Events: wh.Events, UpdatedAt: wh.UpdatedAt})
	return nil
}

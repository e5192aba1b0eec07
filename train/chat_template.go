package train

import (
	"errors"
	"fmt"

	"github.com/dstune/dstune/tokenizer/chat"
)

// loadChatTemplate finds the chat template that renders "messages" rows
// (chat.Find: Config.ChatTemplate's file, else the tokenizer_config.json
// beside the tokenizer). Without a template, missing says why, for the
// rows that need one; a template given with --chat-template that cannot
// be read is an error.
func loadChatTemplate(cfg *Config) (ct *chat.ChatTemplate, missing string, err error) {
	switch {
	case cfg.Tokenizer == "" && cfg.ChatTemplate != "":
		return nil, "", errors.New("--chat-template needs --tokenizer, which encodes the rendered conversations")
	case cfg.Tokenizer == "":
		return nil, "give --tokenizer (with a tokenizer_config.json holding \"chat_template\" beside it) or --chat-template FILE with it", nil
	}
	return chat.Find(cfg.Tokenizer, cfg.ChatTemplate)
}

// recordChatTemplate records in the run's configuration the chat
// template that rendered the data's "messages" rows, refusing, on a
// resumed run, a template other than the one the run started with.
func (r *runner) recordChatTemplate(ct *chat.ChatTemplate, sets ...*Dataset) error {
	used := false
	for _, ds := range sets {
		used = used || ds != nil && ds.chatRows > 0
	}
	if !used || ct == nil {
		return nil
	}
	cfg := &r.cfg
	if r.opts.Resume && cfg.ChatTemplateSHA256 != "" && cfg.ChatTemplateSHA256 != ct.SHA256 {
		return fmt.Errorf("resume: the chat template (%s) has changed since the run started (sha256 %s, config.json says %s)", ct.Source, ct.SHA256, cfg.ChatTemplateSHA256)
	}
	cfg.ChatTemplateSHA256 = ct.SHA256
	return nil
}

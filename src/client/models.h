/*
 * models.h
 *		What /v1/models/{id} says of a model, looked up once per backend.
 */
#ifndef CLAUDE_MODELS_H
#define CLAUDE_MODELS_H

typedef struct ClaudeModelInfo
{
	bool		structured_outputs; /* output_config.format, strict tools */
	int			max_input_tokens;	/* its context window; 0: unknown */
	int			max_tokens;		/* largest max_tokens; 0: unknown */
} ClaudeModelInfo;

extern bool claude_model_info(const char *model, ClaudeModelInfo *out);

#endif

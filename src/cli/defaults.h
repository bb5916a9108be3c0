/* defaults.h: where the CLI finds what likeness ships when no path is given: the emoji model,
 * its evaluator and the demo's example images (environment variable, else the source tree the
 * program was built from, else relative to the working directory). */
#ifndef LK_CLI_DEFAULTS_H
#define LK_CLI_DEFAULTS_H

/* $LK_MODEL, else <source>/models/emoji, else "models/emoji". */
const char *lk_cli_default_model(void);
/* $LK_EVALUATOR, else <source>/models/emoji-evaluator, else "models/emoji-evaluator". */
const char *lk_cli_default_evaluator(void);
/* <source>/examples/emoji-fox, else "examples/emoji-fox". */
const char *lk_cli_default_example(void);
/* $LK_DATA, else $HOME/.cache/likeness/emoji (the EmojiBench data set). */
const char *lk_cli_default_data(void);

#endif

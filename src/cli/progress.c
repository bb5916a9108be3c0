/* progress.c: the CLI's progress output (terminal bar with rate and ETA, or JSON lines) and the
 * Ctrl-C cancel flag. */
#define _POSIX_C_SOURCE 200809L
#include "cli/progress.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t lk_cli_interrupted = 0;

double lk_cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void on_sigint(int sig) {
    (void)sig;
    lk_cli_interrupted = 1;
}

void lk_cli_sigint_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = (int)SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigaction(SIGINT, &sa, NULL);
}

void lk_cli_sigint_restore(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

void lk_cli_progress_init(lk_cli_progress *p, FILE *f, int n_images) {
    memset(p, 0, sizeof *p);
    p->f = f;
    p->n_images = n_images;
    p->tty = isatty(fileno(f)) != 0;
    const char *mode = getenv("LK_PROGRESS");
    if (mode && !strcmp(mode, "json")) p->tty = false;
    else if (mode && !strcmp(mode, "bar")) p->tty = true;
    else if (mode && !strcmp(mode, "none")) p->silent = true;
    p->t_start = lk_cli_now();
}

void lk_cli_progress_image(lk_cli_progress *p, int index, uint64_t seed) {
    p->image = index;
    p->seed = seed;
    p->t_image = lk_cli_now();
    p->last_total = 0;
}

void lk_cli_progress_end_line(lk_cli_progress *p) {
    if (p->bar_open) {
        fputc('\n', p->f);
        fflush(p->f);
        p->bar_open = false;
    }
}

/* "1:05" / "1:02:03" */
static void fmt_time(char *buf, size_t n, double s) {
    if (!(s >= 0.0) || s > 359999.0) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* n cells of full (U+2588) then light-shade (U+2591) blocks, fill of them full, into out */
static void draw_bar(char *out, int n, int fill) {
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        memcpy(out + o, i < fill ? "\xe2\x96\x88" : "\xe2\x96\x91", 3);
        o += 3;
    }
    out[o] = '\0';
}

lk_status lk_cli_progress_step(void *ud, int done, int total, float timestep) {
    lk_cli_progress *p = ud;
    p->last_total = total;
    if (p->silent || total <= 0) return LK_OK;
    const double now = lk_cli_now(), el = now - p->t_image;
    const double rate = el > 0.0 ? (double)done / el : 0.0;             /* steps per second */
    const int left = (total - done) + (p->n_images - p->image) * total; /* this and later images */
    const double eta = rate > 0.0 ? (double)left / rate : -1.0;
    if (!p->tty) {
        fprintf(p->f,
                "{\"event\":\"step\",\"image\":%d,\"images\":%d,\"seed\":%llu,\"step\":%d,\"steps\":%d,"
                "\"timestep\":%.6g,\"elapsed_s\":%.3f,\"it_per_s\":%.4g,\"eta_s\":%.1f}\n",
                p->image, p->n_images, (unsigned long long)p->seed, done, total, (double)timestep,
                now - p->t_start, rate, eta < 0.0 ? 0.0 : eta);
        fflush(p->f);
        return LK_OK;
    }
    enum { W = 28 };
    char bar[W * 3 + 1];
    draw_bar(bar, W, (int)((double)W * done / total));
    char et[32], ea[32];
    fmt_time(et, sizeof et, now - p->t_start);
    fmt_time(ea, sizeof ea, eta);
    char rs[32];
    if (rate >= 1.0 || rate == 0.0) snprintf(rs, sizeof rs, "%.2f it/s", rate);
    else snprintf(rs, sizeof rs, "%.2f s/it", 1.0 / rate);
    fprintf(p->f, "\r\033[K");
    if (p->n_images > 1) fprintf(p->f, "image %d/%d ", p->image, p->n_images);
    fprintf(p->f, "%s %d/%d [%s, %s, ETA %s]", bar, done, total, et, rs, ea);
    fflush(p->f);
    p->bar_open = true;
    if (done == total) lk_cli_progress_end_line(p);
    return LK_OK;
}

/* JSON string body (no quotes) of text to f */
static void json_escape(FILE *f, const char *t) {
    for (const unsigned char *c = (const unsigned char *)t; *c; c++) {
        if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
        else if (*c == '\n') fputs("\\n", f);
        else if (*c == '\t') fputs("\\t", f);
        else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
        else fputc(*c, f);
    }
}

void lk_cli_progress_work(lk_cli_progress *p, const char *label, double done, double total) {
    if (p->silent || !(total > 0.0)) return;
    const double now = lk_cli_now(), el = now - p->t_start;
    const bool end = done >= total;
    if (!end && now - p->t_work < (p->tty ? 0.2 : 10.0)) return;
    p->t_work = now;
    const double frac = done > 0.0 ? (done < total ? done / total : 1.0) : 0.0;
    const double eta = frac > 0.0 ? el * (1.0 - frac) / frac : -1.0;
    if (!p->tty) {
        fprintf(p->f, "{\"event\":\"progress\",\"what\":\"");
        json_escape(p->f, label);
        fprintf(p->f, "\",\"fraction\":%.4f,\"elapsed_s\":%.1f,\"eta_s\":%.1f}\n", frac, el,
                eta < 0.0 ? 0.0 : eta);
        fflush(p->f);
        return;
    }
    enum { W = 28 };
    char bar[W * 3 + 1], et[32], ea[32];
    draw_bar(bar, W, (int)(W * frac));
    fmt_time(et, sizeof et, el);
    fmt_time(ea, sizeof ea, eta);
    fprintf(p->f, "\r\033[K%s %s %3.0f%% [%s, ETA %s]", label, bar, 100.0 * frac, et, ea);
    fflush(p->f);
    p->bar_open = true;
    if (end) lk_cli_progress_end_line(p);
}

void lk_cli_progress_note(lk_cli_progress *p, const char *event, const char *fmt, ...) {
    if (p->silent) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lk_cli_progress_end_line(p);
    if (p->tty) {
        fprintf(p->f, "%s\n", msg);
    } else {
        fprintf(p->f, "{\"event\":\"");
        json_escape(p->f, event);
        fprintf(p->f, "\",\"message\":\"");
        json_escape(p->f, msg);
        fprintf(p->f, "\"}\n");
    }
    fflush(p->f);
}

void lk_cli_progress_train(lk_cli_progress *p, int64_t step, int64_t steps, int64_t step0,
                           double t_start, float loss, float lr, float grad_norm,
                           const char *metric_name, float metric) {
    if (p->silent) return;
    const double el = lk_cli_now() - t_start;
    const int64_t done = step - step0;
    const double per = done > 0 ? el / (double)done : 0.0;
    const double eta = per * (double)(steps - step);
    if (!p->tty) {
        fprintf(p->f, "{\"event\":\"step\",\"step\":%lld,\"steps\":%lld,\"loss\":%.6g,\"lr\":%.6g,"
                "\"grad_norm\":%.6g,", (long long)step, (long long)steps, (double)loss, (double)lr,
                (double)grad_norm);
        if (metric_name) fprintf(p->f, "\"%s\":%.6g,", metric_name, (double)metric);
        fprintf(p->f, "\"s_per_step\":%.4g,\"eta_s\":%.1f}\n", per, eta);
        fflush(p->f);
        return;
    }
    enum { W = 24 };
    char bar[W * 3 + 1], et[32], ea[32], mt[64] = "";
    draw_bar(bar, W, steps > 0 ? (int)((double)W * (double)step / (double)steps) : W);
    fmt_time(et, sizeof et, el);
    fmt_time(ea, sizeof ea, eta);
    if (metric_name) snprintf(mt, sizeof mt, " %s %.4g", metric_name, (double)metric);
    fprintf(p->f, "\r\033[K%s %lld/%lld loss %.4f%s lr %.2e [%s, %.2f s/it, ETA %s]", bar,
            (long long)step, (long long)steps, (double)loss, mt, (double)lr, et, per, ea);
    fflush(p->f);
    p->bar_open = true;
}

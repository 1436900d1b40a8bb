package com.connecfy.core;

/** What a request's HTTP status means for trying it again. */
public enum Disposition {
    /** 2xx: the server took it. */
    DONE,
    /**
     * A 4xx other than 401, 403, 408, 425 and 429: the same request will never succeed
     * (bad body 400, unknown message 404, state moved on 409).
     */
    FINAL,
    /**
     * 401, 403, 408, 425, 429, 5xx, any other status, or no answer at all: try again later.
     * A 401 or 403 may come from a proxy, a CDN or a captive portal rather than the
     * server; whether the server itself refused the token is {@link ApiException#refusesToken}.
     */
    RETRY;

    public static Disposition of(int status) {
        if (status >= 200 && status < 300) {
            return DONE;
        }
        if (status >= 400 && status < 500 && status != 401 && status != 403 && status != 408 && status != 425
                && status != 429) {
            return FINAL;
        }
        return RETRY;
    }
}

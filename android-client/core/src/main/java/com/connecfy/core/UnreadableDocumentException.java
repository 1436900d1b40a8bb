package com.connecfy.core;

import java.io.IOException;

/** A stored document that is not the JSON it should be (a bug, or a damaged file). */
public final class UnreadableDocumentException extends IOException {
    private static final long serialVersionUID = 1L;

    public final String document;

    public UnreadableDocumentException(String document, Throwable cause) {
        super("unreadable " + document + ": " + cause.getMessage(), cause);
        this.document = document;
    }
}

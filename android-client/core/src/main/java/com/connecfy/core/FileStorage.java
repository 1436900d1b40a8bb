package com.connecfy.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileNotFoundException;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.Charset;
import java.util.regex.Pattern;

/**
 * {@link Storage} in one directory, one file a document (on Android the app's private
 * files directory). Writes go to a temporary file that is synced and then renamed over
 * the old one, so a crash or power loss leaves either version whole. Appends are synced
 * before they return.
 */
public final class FileStorage implements Storage {
    private static final Charset UTF8 = Charset.forName("UTF-8");
    private static final Pattern NAME = Pattern.compile("[a-z0-9][a-z0-9._-]{0,63}");

    private final File dir;

    public FileStorage(File dir) throws IOException {
        if (!dir.isDirectory() && !dir.mkdirs()) {
            throw new IOException("cannot create " + dir);
        }
        this.dir = dir;
    }

    private File file(String name) {
        if (!NAME.matcher(name).matches()) {
            throw new IllegalArgumentException("bad document name: " + name);
        }
        return new File(dir, name);
    }

    @Override
    public synchronized String read(String name) throws IOException {
        InputStream in;
        try {
            in = new FileInputStream(file(name));
        } catch (FileNotFoundException e) {
            return null;
        }
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buffer = new byte[8192];
            int n;
            while ((n = in.read(buffer)) > 0) {
                out.write(buffer, 0, n);
            }
            return new String(out.toByteArray(), UTF8);
        } finally {
            in.close();
        }
    }

    @Override
    public synchronized void write(String name, String text) throws IOException {
        File target = file(name);
        File temp = new File(dir, name + ".tmp");
        writeSynced(new FileOutputStream(temp), text);
        if (!temp.renameTo(target)) {
            temp.delete();
            throw new IOException("cannot replace " + target);
        }
    }

    @Override
    public synchronized void append(String name, String text) throws IOException {
        writeSynced(new FileOutputStream(file(name), true), text);
    }

    /** Writes {@code text} to {@code out}, on the disk before this returns, and closes it. */
    private static void writeSynced(FileOutputStream out, String text) throws IOException {
        try {
            out.write(text.getBytes(UTF8));
            out.flush();
            out.getFD().sync();
        } finally {
            out.close();
        }
    }

    @Override
    public synchronized void delete(String name) throws IOException {
        File target = file(name);
        if (target.exists() && !target.delete()) {
            throw new IOException("cannot delete " + target);
        }
    }
}

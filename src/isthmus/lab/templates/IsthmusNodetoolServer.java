// The Isthmus lab's warm nodetool: Cassandra's own NodeTool, run in one long-lived JVM per container.
//
// Each `nodetool` of the lab's cassandra image is a small client (see isthmus.lab.pods.imagefs) that sends its
// arguments over a Unix socket to this server, which runs org.apache.cassandra.tools.NodeTool.execute with
// them, against the node's JMX as nodetool does, and streams back its stdout, stderr and exit status. A probe
// then costs milliseconds instead of a JVM start (about 2 CPU-seconds). Requests are served one at a time.
//
// Protocol: request = 4-byte big-endian length + the arguments joined by NUL; response = frames of
// 1 tag byte ('o' stdout, 'e' stderr, 'x' exit status as decimal text) + 4-byte length + bytes.
//
// In NodeTool's own package only because NodeProbeFactory, what nodetool's main uses, is package-private.
package org.apache.cassandra.tools;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.PrintStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

public final class IsthmusNodetoolServer {
    /** NodeTool ends some failures (it cannot reach JMX yet) with System.exit: here that ends the request only. */
    static final class Exit extends SecurityException {
        final int status;

        Exit(int status) {
            super("exit " + status);
            this.status = status;
        }
    }

    @SuppressWarnings("removal")
    private static void trapExit() {
        System.setSecurityManager(new SecurityManager() {
            @Override
            public void checkExit(int status) {
                throw new Exit(status);
            }

            @Override
            public void checkPermission(java.security.Permission perm) {
            }

            @Override
            public void checkPermission(java.security.Permission perm, Object context) {
            }
        });
    }

    public static void main(String[] argv) throws Exception {
        trapExit();
        Path socket = Path.of(argv[0]);
        Files.deleteIfExists(socket);
        Path tmp = Path.of(argv[0] + ".tmp");
        Files.deleteIfExists(tmp);
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(tmp));
        Files.move(tmp, socket);  // appears only once it accepts
        while (true) {
            try (SocketChannel ch = server.accept()) {
                serve(ch);
            } catch (Exception e) {
                e.printStackTrace();
            }
        }
    }

    private static void frame(DataOutputStream out, char tag, byte[] data) throws Exception {
        out.writeByte(tag);
        out.writeInt(data.length);
        out.write(data);
    }

    private static void serve(SocketChannel ch) throws Exception {
        DataInputStream in = new DataInputStream(Channels.newInputStream(ch));
        byte[] request = new byte[in.readInt()];
        in.readFully(request);
        String joined = new String(request, StandardCharsets.UTF_8);
        String[] args = joined.isEmpty() ? new String[0] : joined.split("\0", -1);
        ByteArrayOutputStream stdout = new ByteArrayOutputStream();
        ByteArrayOutputStream stderr = new ByteArrayOutputStream();
        int status;
        try (PrintStream o = new PrintStream(stdout, true, StandardCharsets.UTF_8);
             PrintStream e = new PrintStream(stderr, true, StandardCharsets.UTF_8)) {
            try {
                status = new NodeTool(new NodeProbeFactory(), new Output(o, e)).execute(args);
            } catch (Exit exit) {
                status = exit.status;
            } catch (Throwable t) {
                Throwable root = t;
                while (root.getCause() != null && !(root instanceof Exit)) {
                    root = root.getCause();
                }
                if (root instanceof Exit) {
                    status = ((Exit) root).status;
                } else {
                    t.printStackTrace(e);
                    status = 2;
                }
            }
        }
        DataOutputStream out = new DataOutputStream(Channels.newOutputStream(ch));
        frame(out, 'o', stdout.toByteArray());
        frame(out, 'e', stderr.toByteArray());
        frame(out, 'x', Integer.toString(status).getBytes(StandardCharsets.UTF_8));
        out.flush();
    }
}

// Starts Amazon's DynamoDB Local bound to one address (its own launcher binds every interface).
//
// Run with the JDK's single-file source launcher, the jar and its lib directory on the class path:
//   java -cp 'DynamoDBLocal.jar:DynamoDBLocal_lib/*' -Djava.library.path=DynamoDBLocal_lib \
//       DynamoDbLocalLauncher.java 127.0.0.1 -inMemory -sharedDb -disableTelemetry
// The first argument is the address; the rest go to DynamoDB Local's own command line. The server
// binds a free port and prints "listening <address> <port>" once it accepts connections.

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public class DynamoDbLocalLauncher {
    public static void main(String[] args) throws Exception {
        String host = args[0];
        // DynamoDB Local refuses port 0; any valid port is given here and replaced below.
        List<String> options = new ArrayList<>(Arrays.asList(args).subList(1, args.length));
        options.addAll(List.of("-port", "8000"));
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(options.toArray(new String[0]));
        // The embedded Jetty server is private; its connector is configured before it starts.
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        for (Connector connector : server.getConnectors()) {
            ServerConnector network = (ServerConnector) connector;
            network.setHost(host);
            network.setPort(0);
        }
        proxy.start();
        for (Connector connector : server.getConnectors()) {
            ServerConnector network = (ServerConnector) connector;
            System.out.println("listening " + network.getHost() + " " + network.getLocalPort());
        }
        System.out.flush();
        proxy.join();
    }
}

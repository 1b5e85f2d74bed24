import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.engine.TestExecutionResult;

import java.io.PrintWriter;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectPackage;

/**
 * Runs the JUnit tests of the given packages or classes (default: io.dejavu.engine.cuda and the server with the CUDA
 * engine, io.dejavu.server.CudaServingTest) on the GPU machine, which has no Maven:
 * prints each test's outcome and a summary; exit status 1 when any failed.
 */
public final class GpuTestMain {
    public static void main(String[] args) {
        String[] packages = args.length > 0 ? args
                : new String[]{"io.dejavu.engine.cuda", "io.dejavu.server.CudaServingTest"};
        LauncherDiscoveryRequestBuilder request = LauncherDiscoveryRequestBuilder.request();
        for (String p : packages) {
            boolean isClass = Character.isUpperCase(p.charAt(p.lastIndexOf('.') + 1));
            request.selectors(isClass ? selectClass(p) : selectPackage(p));
        }
        LauncherDiscoveryRequest built = request.build();
        Launcher launcher = LauncherFactory.create();
        SummaryGeneratingListener summary = new SummaryGeneratingListener();
        TestExecutionListener progress = new TestExecutionListener() {
            @Override
            public void executionFinished(TestIdentifier id, TestExecutionResult result) {
                if (!id.isTest()) return;
                System.out.printf("%-8s %s%s%n", result.getStatus(), id.getLegacyReportingName(),
                        result.getThrowable().map(t -> "  -> " + t).orElse(""));
            }

            @Override
            public void executionSkipped(TestIdentifier id, String reason) {
                System.out.printf("SKIPPED  %s (%s)%n", id.getLegacyReportingName(), reason);
            }
        };
        launcher.execute(built, summary, progress);
        TestExecutionSummary s = summary.getSummary();
        s.printTo(new PrintWriter(System.out));
        s.printFailuresTo(new PrintWriter(System.out), 30);
        System.exit(s.getTotalFailureCount() == 0 && s.getTestsFoundCount() > 0 ? 0 : 1);
    }
}

using System.ComponentModel;
using System.Diagnostics;

namespace Microsandbox.Engine;

/// <summary>What a host tool did: its exit code and what it wrote.</summary>
internal sealed record HostToolResult(int ExitCode, string Output, string Error);

/// <summary>Runs the host's own tools (mkfs.ext4, qemu-img, cp) to their end.</summary>
internal static class HostTool
{
    /// <summary>
    /// Runs <paramref name="program"/> with its arguments, passed one by one so no shell quoting is
    /// involved. A cancelled run is killed. Throws <paramref name="missing"/> when the program
    /// cannot be started at all.
    /// </summary>
    public static async Task<HostToolResult> RunAsync(
        string program, IEnumerable<string> arguments, Func<Exception, SandboxException> missing,
        CancellationToken cancellationToken)
    {
        var info = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        Process process;
        try
        {
            process = Process.Start(info)!;
        }
        catch (Win32Exception ex)
        {
            throw missing(ex);
        }

        using (process)
        {
            Task<string> output = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
            Task<string> error = process.StandardError.ReadToEndAsync(CancellationToken.None);
            try
            {
                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                throw;
            }

            return new HostToolResult(process.ExitCode, await output.ConfigureAwait(false),
                await error.ConfigureAwait(false));
        }
    }
}

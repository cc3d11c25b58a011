using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Stops sandboxes and starts them again.</para>
/// <para type="description">Stops each sandbox gracefully (killing its VM after the timeout, or at once with -Force), then boots it again and waits until its agent is ready. A sandbox that is stopped or crashed is just started. Its files are kept. Many sandboxes are restarted at once, and each failure is reported on its own.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Restart, "Sandbox", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Sandbox))]
public sealed class RestartSandboxCommand : SandboxStopCmdlet
{
    /// <inheritdoc/>
    protected override void ProcessRecord() => EnqueueTargets("Restart sandbox");

    /// <inheritdoc/>
    protected override void EndProcessing() =>
        RunQueued(async (s, progress, token) =>
        {
            progress.Report(new(SandboxMessageLevel.Verbose, $"Restarting sandbox '{s.Name}'."));
            Sandbox started = await Engine.RestartAsync(s.Name, StopTimeout, progress, token).ConfigureAwait(false);
            return PassThru ? started : null;
        });
}

using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Stops running sandboxes.</para>
/// <para type="description">Asks each guest to sync and power off, and kills the VM if it has not stopped within the timeout. Stopping a sandbox that is not running does nothing. Many sandboxes are stopped at once, and each failure is reported on its own.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Stop, "Sandbox", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Sandbox))]
public sealed class StopSandboxCommand : SandboxStopCmdlet
{
    /// <inheritdoc/>
    protected override void ProcessRecord() => EnqueueTargets("Stop sandbox");

    /// <inheritdoc/>
    protected override void EndProcessing() =>
        RunQueued(async (s, progress, token) =>
        {
            progress.Report(new(SandboxMessageLevel.Verbose, $"Stopping sandbox '{s.Name}'."));
            Sandbox stopped = await Engine.StopAsync(s.Name, StopTimeout, progress, token).ConfigureAwait(false);
            return PassThru ? stopped : null;
        });
}

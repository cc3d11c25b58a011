using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Starts stopped sandboxes.</para>
/// <para type="description">Boots the microVM of each sandbox that is stopped or crashed and waits until its agent is ready. Running sandboxes are left as they are. Many sandboxes are started at once, and each failure is reported on its own.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Start, "Sandbox", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Sandbox))]
public sealed class StartSandboxCommand : SandboxTargetCmdlet
{
    /// <summary>
    /// <para type="description">Emit the started sandboxes.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord() => EnqueueTargets("Start sandbox");

    /// <inheritdoc/>
    protected override void EndProcessing() =>
        RunQueued(async (s, progress, token) =>
        {
            if (s.State == SandboxState.Crashed)
            {
                progress.Report(new(SandboxMessageLevel.Verbose,
                    $"Starting sandbox '{s.Name}' again after it crashed: {s.Reason}"));
            }

            Sandbox started = await Engine.StartAsync(s.Name, progress, token).ConfigureAwait(false);
            return PassThru ? started : null;
        });
}

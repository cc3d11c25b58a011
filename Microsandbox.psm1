# The cmdlets live in Microsandbox.PowerShell.dll (a nested module). This file only tells a user
# early, at import, when the platform cannot run sandboxes at all.
if (-not $IsLinux) {
    Write-Warning ('Microsandbox runs sandboxes on Linux hosts for now; on this platform the ' +
        'cmdlets load but New-Sandbox will fail. Test-SandboxHost says what is missing.')
}
